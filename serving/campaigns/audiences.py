"""Campaign audiences from batch scores (DESIGN §8): who gets which message, why, with what offer, when, and who is
held out as control.

`build_campaign(scores, replenishment, config, as_of)` is pure (DataFrames in, DataFrames out), vectorised:

1. members who withdrew marketing consent are removed first: they are never in any audience (nor in a control
   group: the holdout is of members we *would* contact);
2. each enabled audience selects its eligible members by its rule and ranks them (win-back by value at risk =
   churn probability × LTV; replenishment by the soonest due date; tier upgrade by the smallest remaining gap; …);
3. audiences are taken in priority order (lower first); with `exclusive`, members already placed are skipped; then
   the cap keeps the top-ranked;
4. each row gets a reason in plain words, the offer for the member's tier strategy, recommended items, a send hour
   (the member's own peak activity hour when known, else the default, 20h: the documents' 19–21h example) and a
   control flag: a seeded hash of (seed, audience, member) below the control share, so the same member in the same
   audience with the same seed is always in the same group, whoever else is in the list.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.contract import MEMBER_ID
from serving.campaigns.config import CampaignConfig, STRATEGIES

Frame = pd.DataFrame | None

ROW_COLUMNS = (
    MEMBER_ID, "audience", "kind", "priority", "rank", "reason", "offer", "offer_cost_member",
    "offer_cost_conversion", "strategy", "tier", "value", "recommended_items", "send_hour", "send_at", "control",
)


@dataclass
class Campaign:
    """The built campaign: one frame of rows (all audiences), the summary per audience, and its metadata."""

    rows: pd.DataFrame
    summary: pd.DataFrame
    meta: dict[str, Any]

    def audience(self, name: str) -> pd.DataFrame:
        return self.rows[self.rows["audience"] == name].reset_index(drop=True)


def _money(x: pd.Series, currency: str) -> pd.Series:
    return currency + x.round(0).astype("Int64").astype("string").fillna("?")


def _int_str(x: pd.Series) -> pd.Series:
    return x.round(0).astype("Int64").astype("string").fillna("?")


def _col(s: pd.DataFrame, name: str, default: Any = np.nan) -> pd.Series:
    return s[name] if name in s.columns else pd.Series(default, index=s.index)


def _needs(scores: pd.DataFrame, audience: str, cols: tuple[str, ...]) -> None:
    missing = [c for c in cols if c not in scores.columns]
    if missing:
        raise ValueError(f"audience {audience!r} needs score column(s) {missing}: were the models it uses "
                         "(churn, ltv, timing, recs) loaded when scoring?")


# ---------------------------------------------------------------------------------------------------- the rules

def _win_back(a: Any, s: pd.DataFrame, rep: Frame, cfg: CampaignConfig, send: pd.Timestamp) -> pd.DataFrame:
    cur = cfg.currency
    _needs(s, a.name, ("churn_probability", "ltv"))
    var = _col(s, "value_at_risk", None)
    var = s["churn_probability"] * s["ltv"] if var is None or var.isna().all() else var
    m = (s["churn_probability"] >= a.min_churn_probability) & (var >= a.min_value_at_risk)
    m &= _col(s, "lifecycle_segment", "").isin(a.lifecycle)
    e = s[m]
    v = var[m]
    last = _col(e, "days_since_last_order")
    reason = ("churn risk " + _int_str(e["churn_probability"] * 100) + "% × expected value "
              + _money(e["ltv"], cur) + " = " + _money(v, cur) + " at risk; "
              + ("last order " + _int_str(last) + " days ago").where(last.notna(), "no order yet"))
    return pd.DataFrame({MEMBER_ID: e[MEMBER_ID], "rank_key": v, "value": v, "reason": reason})


def _replenishment(a: Any, s: pd.DataFrame, rep: Frame, cfg: CampaignConfig, send: pd.Timestamp) -> pd.DataFrame:
    if rep is None or not len(rep) or "days_until_due" not in rep.columns:
        return _empty()
    # due dates are measured from the scores' as_of; the window is counted from the send date
    shift = 0.0
    if "as_of" in s.columns and len(s):
        shift = (send - pd.Timestamp(s["as_of"].iloc[0]).normalize()) / pd.Timedelta(days=1)
    r = rep.assign(days_until_due=rep["days_until_due"] - shift)
    r = r[(r["days_until_due"] >= -a.overdue_grace_days) & (r["days_until_due"] < a.due_within_days)]
    r = r.sort_values(["days_until_due", "category"], kind="mergesort").drop_duplicates(MEMBER_ID)
    r = r[r[MEMBER_ID].isin(s[MEMBER_ID])]
    ltv = s.set_index(MEMBER_ID)["ltv"].reindex(r[MEMBER_ID]).to_numpy() if "ltv" in s.columns else np.nan
    d = r["days_until_due"]
    when = ("due in " + _int_str(d.clip(lower=0)) + " days").where(d >= 0.5, "due now")
    when = when.where(d >= -0.5, "overdue by " + _int_str(-d) + " days")
    reason = ("buys " + r["category"].astype("string") + " about every "
              + _int_str(r["due_cycle_days"]) + " days; " + when)
    return pd.DataFrame({MEMBER_ID: r[MEMBER_ID].astype("string").to_numpy(), "rank_key": -d.to_numpy(),
                         "value": ltv, "reason": reason.to_numpy(),
                         "due_category": r["category"].astype("string").to_numpy()})


def _tier_upgrade(a: Any, s: pd.DataFrame, rep: Frame, cfg: CampaignConfig, send: pd.Timestamp) -> pd.DataFrame:
    cur = cfg.currency
    _needs(s, a.name, ("spend_to_next_tier", "next_tier"))
    gap = s["spend_to_next_tier"]
    spent = _col(s, "qualifying_spend").fillna(0.0)
    threshold = spent + gap
    share = gap / threshold.where(threshold > 0)
    m = s["next_tier"].notna() & gap.notna() & (gap > a.min_spend_to_next) & (share <= a.within_share)
    e = s[m]
    reason = (_money(gap[m], cur) + " more to reach " + e["next_tier"].astype("string") + " ("
              + _money(spent[m], cur) + " of " + _money(threshold[m], cur) + " spent)")
    return pd.DataFrame({MEMBER_ID: e[MEMBER_ID], "rank_key": -share[m], "value": _col(e, "ltv"),
                         "reason": reason, "spend_to_next_tier": gap[m]})


def _points_expiry(a: Any, s: pd.DataFrame, rep: Frame, cfg: CampaignConfig, send: pd.Timestamp) -> pd.DataFrame:
    _needs(s, a.name, ("points_expiring_30d",))
    pts = s["points_expiring_30d"].astype("float64")
    m = pts >= a.min_points
    e = s[m]
    reason = (_int_str(pts[m]) + " points expire within 30 days (balance "
              + _int_str(_col(e, "points_balance").astype("float64")) + ")")
    return pd.DataFrame({MEMBER_ID: e[MEMBER_ID], "rank_key": pts[m], "value": _col(e, "ltv"),
                         "reason": reason, "points_expiring_30d": pts[m]})


def _birthday(a: Any, s: pd.DataFrame, rep: Frame, cfg: CampaignConfig, send: pd.Timestamp) -> pd.DataFrame:
    _needs(s, a.name, ("days_to_birthday", "as_of"))
    bday = pd.to_datetime(s["as_of"]).dt.normalize() + pd.to_timedelta(s["days_to_birthday"], unit="D")
    m = bday.notna() & (bday.dt.year == send.year) & (bday.dt.month == send.month)
    e = s[m]
    gift = _col(e, "birthday_gift", False).fillna(False).astype(bool)
    reason = ("birthday on " + bday[m].dt.strftime("%d %b").astype("string")
              + ": birthday-month points" + pd.Series(np.where(gift, " and a birthday gift", ""), index=e.index))
    return pd.DataFrame({MEMBER_ID: e[MEMBER_ID], "rank_key": _col(e, "ltv").fillna(0.0), "value": _col(e, "ltv"),
                         "reason": reason})


def _onboarding(a: Any, s: pd.DataFrame, rep: Frame, cfg: CampaignConfig, send: pd.Timestamp) -> pd.DataFrame:
    done = _col(s, "profile_completed", pd.NA).astype("boolean")
    m = _col(s, "lifecycle_segment", "").isin(a.lifecycle) & ~done.fillna(False)
    e = s[m]
    tenure = _col(e, "tenure_days")
    joined = ("joined " + _int_str(tenure) + " days ago").where(tenure.notna(), "new member")
    status = pd.Series(np.where(done[m].isna(), "profile status unknown", "profile not completed"),
                       index=e.index)
    reason = (joined + "; " + status + ": " + str(a.profile_points) + " points for completing it")
    return pd.DataFrame({MEMBER_ID: e[MEMBER_ID], "rank_key": -tenure.fillna(0.0), "value": _col(e, "ltv"),
                         "reason": reason})


def _content_recs(a: Any, s: pd.DataFrame, rep: Frame, cfg: CampaignConfig, send: pd.Timestamp) -> pd.DataFrame:
    cur = cfg.currency
    n_recs = _col(s, "rec_items", None)
    m = _col(s, "value_segment", "").isin(a.value_segments)
    if a.min_recommendations > 0:
        if n_recs is None:
            raise ValueError(f"audience {a.name!r} needs recommendations: score with the recs model")
        m &= n_recs.map(len) >= a.min_recommendations
    e = s[m]
    reason = (e["value_segment"].astype("string") + "-value member (" + _money(_col(e, "spend_12m").fillna(0.0), cur)
              + " in 12 months): content and recommendations")
    return pd.DataFrame({MEMBER_ID: e[MEMBER_ID], "rank_key": _col(e, "ltv").fillna(0.0), "value": _col(e, "ltv"),
                         "reason": reason})


RULES = {"win_back": _win_back, "replenishment": _replenishment, "tier_upgrade": _tier_upgrade,
         "points_expiry": _points_expiry, "birthday": _birthday, "onboarding": _onboarding,
         "content_recs": _content_recs}


def select(a: Any, s: pd.DataFrame, rep: pd.DataFrame | None, cfg: CampaignConfig,
           send: pd.Timestamp) -> pd.DataFrame:
    """Eligible members of one audience: member_id, rank_key (higher first), value, reason (plain words), plus the
    audience's own details (due_category, spend_to_next_tier, points_expiring_30d)."""
    rule = RULES.get(a.kind)
    if rule is None:
        raise ValueError(f"unknown audience kind {a.kind!r}; known: {sorted(RULES)}")
    return rule(a, s, rep, cfg, send)


def _empty() -> pd.DataFrame:
    return pd.DataFrame({MEMBER_ID: pd.Series([], dtype="string"), "rank_key": pd.Series([], dtype=float),
                         "value": pd.Series([], dtype=float), "reason": pd.Series([], dtype="string")})


# ------------------------------------------------------------------------------------------------- assembling

def control_flags(member_ids: pd.Series, audience: str, seed: int, share: float) -> np.ndarray:
    """Seeded random holdout: hash(seed, audience, member) / 2^64 < share (stable per member, independent of
    the rest of the list)."""
    if share <= 0 or len(member_ids) == 0:
        return np.zeros(len(member_ids), dtype=bool)
    keys = (f"{seed}|{audience}|" + member_ids.astype("string")).to_numpy(dtype=object)
    u = pd.util.hash_array(keys, categorize=False).astype(np.float64) / 2.0 ** 64
    return u < share


def send_hours(s: pd.DataFrame, cfg: CampaignConfig) -> pd.Series:
    """The member's own peak activity hour with enough actions behind it, else the campaign default."""
    hour = _col(s, "active_hour")
    enough = _col(s, "active_actions", 0.0).fillna(0.0) >= cfg.min_actions_for_hour
    return hour.where(enough & hour.notna(), cfg.default_send_hour).astype("int64")


def consenting(scores: pd.DataFrame, cfg: CampaignConfig) -> pd.Series:
    """True where the member may be contacted: consent not withdrawn (and known, if the campaign requires it)."""
    c = _col(scores, "marketing_consent")
    c = pd.to_numeric(c.astype("float64") if c.dtype == bool else c, errors="coerce")
    ok = c.fillna(0.0 if cfg.require_known_consent else 1.0) > 0.5
    return ok


def build_campaign(scores: pd.DataFrame, replenishment: pd.DataFrame | None, cfg: CampaignConfig,
                   as_of: object | None = None) -> Campaign:
    """Build every audience of `cfg` from batch scores (see the module docstring for the rules)."""
    if MEMBER_ID not in scores.columns:
        raise ValueError(f"scores need a {MEMBER_ID!r} column; they have {list(scores.columns)[:10]}…")
    as_of_ts = pd.Timestamp(as_of if as_of is not None else scores["as_of"].iloc[0] if len(scores) else "NaT")
    send = pd.Timestamp(cfg.send_date) if cfg.send_date else as_of_ts.normalize()
    if pd.isna(send):
        raise ValueError("no send date: set send_date in the campaign config (the scores have no as_of)")
    s = scores.reset_index(drop=True).copy()
    s[MEMBER_ID] = s[MEMBER_ID].astype("string")
    ok = consenting(s, cfg)
    no_consent = set(s.loc[~ok, MEMBER_ID])
    allowed = s[ok].reset_index(drop=True)
    hours = pd.Series(send_hours(allowed, cfg).to_numpy(), index=allowed[MEMBER_ID].to_numpy())
    by_id = allowed.set_index(MEMBER_ID)
    rep = replenishment
    if rep is not None and len(rep):
        rep = rep.copy()
        rep[MEMBER_ID] = rep[MEMBER_ID].astype("string")

    placed: set[str] = set()
    frames, summary = [], []
    for a in sorted((x for x in cfg.audiences if x.enabled), key=lambda x: (x.priority, x.name)):
        elig_all = select(a, s, rep, cfg, send)
        elig_all = elig_all.assign(**{MEMBER_ID: elig_all[MEMBER_ID].astype("string")})
        withdrawn = elig_all[MEMBER_ID].isin(no_consent)
        elig = elig_all[~withdrawn]
        taken = elig[MEMBER_ID].isin(placed) if cfg.exclusive else pd.Series(False, index=elig.index)
        pool = elig[~taken].sort_values(["rank_key", MEMBER_ID], ascending=[False, True], kind="mergesort")
        chosen = pool.head(a.cap) if a.cap is not None else pool
        chosen = chosen.reset_index(drop=True)
        ids = chosen[MEMBER_ID]
        share = cfg.control_share if a.control_share is None else a.control_share
        rows = _rows(a, chosen, by_id, hours, cfg, send, share)
        placed.update(ids.tolist())
        frames.append(rows)
        summary.append({
            "audience": a.name, "kind": a.kind, "priority": a.priority, "eligible": int(len(elig_all)),
            "no_consent": int(withdrawn.sum()), "in_earlier_audience": int(taken.sum()),
            "capped": int(len(pool) - len(chosen)), "members": int(len(rows)),
            "treated": int((~rows["control"]).sum()), "control": int(rows["control"].sum()),
            "value": float(rows["value"].fillna(0.0).sum()),
            "expected_cost": float(rows.loc[~rows["control"], "offer_cost_member"].sum()),
        })
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(ROW_COLUMNS))
    summ = pd.DataFrame(summary)
    meta = {"name": cfg.name, "as_of": as_of_ts.isoformat() if not pd.isna(as_of_ts) else None,
            "send_date": send.date().isoformat(), "seed": cfg.seed, "measure_days": cfg.measure_days,
            "exclusive": cfg.exclusive, "members_scored": int(len(s)), "no_consent": len(no_consent),
            "currency": cfg.currency}
    return Campaign(rows=rows, summary=summ, meta=meta)


def _rows(a: Any, chosen: pd.DataFrame, by_id: pd.DataFrame, hours: pd.Series, cfg: CampaignConfig,
          send: pd.Timestamp, share: float) -> pd.DataFrame:
    ids = chosen[MEMBER_ID].astype("string")
    info = by_id.reindex(ids.to_numpy())
    strategy = (info["strategy"].astype("string") if "strategy" in info.columns
                else pd.Series(pd.NA, index=info.index, dtype="string"))
    offer = pd.Series("", index=info.index, dtype="string")
    cost_m = pd.Series(0.0, index=info.index)
    cost_c = pd.Series(0.0, index=info.index)
    for st in (*STRATEGIES, None):
        o = cfg.offer_for(a, st) if st is not None else cfg.offer_for(a, "default")
        if o is None:
            continue
        m = (strategy == st).fillna(False).to_numpy() if st is not None else \
            (~strategy.isin(STRATEGIES)).fillna(True).to_numpy()
        offer[m] = o.text
        cost_m[m] = o.cost_per_member
        cost_c[m] = o.cost_per_conversion
    if "rec_items" in info.columns and cfg.n_items > 0:
        recs = [list(v)[: cfg.n_items] if isinstance(v, (list, np.ndarray)) else [] for v in info["rec_items"]]
    else:
        recs = [[] for _ in range(len(info))]
    hour = hours.reindex(ids.to_numpy()).fillna(cfg.default_send_hour).astype("int64").to_numpy()
    out = pd.DataFrame({
        MEMBER_ID: ids.to_numpy(),
        "audience": a.name, "kind": a.kind, "priority": a.priority,
        "rank": np.arange(1, len(chosen) + 1, dtype=np.int64),
        "reason": chosen["reason"].astype("string").to_numpy(),
        "offer": offer.to_numpy(), "offer_cost_member": cost_m.to_numpy(), "offer_cost_conversion": cost_c.to_numpy(),
        "strategy": strategy.to_numpy(),
        "tier": (info["tier"].astype("string") if "tier" in info.columns
                 else pd.Series(pd.NA, index=info.index, dtype="string")).to_numpy(),
        "value": pd.to_numeric(chosen["value"], errors="coerce").astype("float64").to_numpy(),
        "recommended_items": recs,
        "send_hour": hour,
        "send_at": (send + pd.to_timedelta(hour, unit="h")).astype("datetime64[us]")
        if len(hour) else pd.Series([], dtype="datetime64[us]"),
        "control": control_flags(ids.reset_index(drop=True), a.name, cfg.seed, share),
    })
    for extra in ("due_category", "spend_to_next_tier", "points_expiring_30d"):
        if extra in chosen.columns:
            out[extra] = chosen[extra].to_numpy()
    return out


def summary_rows(c: Campaign) -> list[dict[str, Any]]:
    """The summary as plain dicts (for the CLI table)."""
    return [{k: (round(v, 1) if isinstance(v, float) else v) for k, v in r.items()}
            for r in c.summary.to_dict("records")]
