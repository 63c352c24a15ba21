"""Campaign audiences (serving/campaigns) on generated score frames: consent, priorities and caps, the seeded control
holdout, each audience's rule, send hours, config validation; and the evaluation's interval covering a known
treatment effect simulated by the synthetic generator."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.campaigns.audiences import build_campaign, control_flags
from serving.campaigns.config import CampaignConfigError, load_campaign, parse_campaign

AS_OF = pd.Timestamp("2025-10-01")
STRATEGY = {"high": "exclusive_service", "mid": "points_and_coupons", "low": "content_and_recommendations"}


def scores_frame(n: int, seed: int = 0) -> pd.DataFrame:
    """Score rows shaped like `member-ml score` output, with every audience's inputs spread widely."""
    rng = np.random.default_rng(seed)
    value = rng.choice(["high", "mid", "low"], n, p=[0.2, 0.3, 0.5])
    churn = rng.uniform(0, 1, n)
    ltv = rng.gamma(2.0, 300.0, n)
    gap = rng.uniform(0, 2000, n)
    spent = rng.uniform(0, 3000, n)
    return pd.DataFrame({
        "member_id": pd.array([f"m{seed}_{i:06d}" for i in range(n)], dtype="string"),
        "as_of": AS_OF,
        "tier": rng.choice(["普通", "银牌", "金牌"], n),
        "next_tier": rng.choice(["银牌", "金牌", "钻石"], n),
        "spend_to_next_tier": gap, "qualifying_spend": spent,
        "points_balance": rng.integers(0, 5000, n), "points_expiring_30d": rng.integers(0, 400, n),
        "birthday_gift": rng.random(n) < 0.5,
        "value_segment": value, "strategy": [STRATEGY[v] for v in value],
        "lifecycle_segment": rng.choice(["new", "active", "silent", "churned"], n),
        "spend_12m": rng.gamma(2, 200, n), "days_since_last_order": rng.uniform(0, 400, n),
        "marketing_consent": np.where(rng.random(n) < 0.1, 0.0, np.where(rng.random(n) < 0.05, np.nan, 1.0)),
        "days_to_birthday": rng.integers(0, 365, n).astype(float),
        "tenure_days": rng.uniform(0, 1500, n),
        "active_hour": rng.integers(0, 24, n).astype(float), "active_actions": rng.integers(0, 20, n).astype(float),
        "profile_completed": pd.array(rng.random(n) < 0.5, dtype="boolean"),
        "churn_probability": churn, "ltv": ltv, "value_at_risk": churn * ltv,
        "rec_items": [[f"I{j}" for j in rng.choice(50, 5, replace=False)] for _ in range(n)],
    })


def replenishment_frame(scores: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed + 1)
    ids = scores["member_id"].sample(frac=0.3, random_state=seed)
    return pd.DataFrame({"member_id": ids.to_numpy(), "category": rng.choice(["美妆", "母婴", "食品"], len(ids)),
                         "days_until_due": rng.uniform(-20, 30, len(ids)),
                         "due_cycle_days": rng.uniform(20, 60, len(ids)), "reminder": True})


def config(**over) -> object:  # noqa: ANN003
    raw = {"seed": 3, "audiences": [{"name": k, "kind": k} for k in
                                    ("win_back", "replenishment", "tier_upgrade", "points_expiry", "birthday",
                                     "onboarding", "content_recs")]}
    raw.update(over)
    return parse_campaign(raw)


def test_shipped_defaults_cover_every_audience_kind() -> None:
    cfg = load_campaign()
    assert {a.kind for a in cfg.audiences} == {"win_back", "replenishment", "tier_upgrade", "points_expiry",
                                               "birthday", "onboarding", "content_recs"}
    assert cfg.control_share == 0.10 and cfg.default_send_hour == 20
    onboarding = next(a for a in cfg.audiences if a.kind == "onboarding")
    assert onboarding.profile_points == 100
    s = scores_frame(3000)
    c = build_campaign(s, replenishment_frame(s), cfg)
    assert set(c.summary["audience"]) == {a.name for a in cfg.audiences}
    assert (c.summary["members"] > 0).all(), c.summary
    need = {"member_id", "audience", "reason", "offer", "recommended_items", "send_hour", "control"}
    assert need <= set(c.rows.columns) and c.rows["reason"].str.len().gt(10).all()
    assert c.rows["offer"].str.len().gt(0).all()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), exclusive=st.booleans(), known=st.booleans(),
       cap=st.one_of(st.none(), st.integers(1, 50)), share=st.floats(0, 0.9))
def test_members_without_consent_are_never_targeted(seed: int, exclusive: bool, known: bool, cap: int | None,
                                                    share: float) -> None:
    s = scores_frame(300, seed)
    cfg = config(exclusive=exclusive, require_known_consent=known, control_share=share,
                 audiences=[{"name": k, "kind": k, "cap": cap} for k in
                            ("win_back", "replenishment", "tier_upgrade", "points_expiry", "birthday", "onboarding",
                             "content_recs")])
    c = build_campaign(s, replenishment_frame(s, seed), cfg)
    withdrawn = set(s.loc[s["marketing_consent"] == 0, "member_id"])
    unknown = set(s.loc[s["marketing_consent"].isna(), "member_id"])
    targeted = set(c.rows["member_id"])  # treated and control alike: the holdout is of members we may contact
    assert not targeted & withdrawn
    if known:
        assert not targeted & unknown
    assert c.meta["no_consent"] == len(withdrawn) + (len(unknown) if known else 0)
    if exclusive:
        assert c.rows["member_id"].is_unique
    if cap is not None:
        assert (c.summary["members"] <= cap).all()


def _two_members() -> pd.DataFrame:
    s = scores_frame(4, 0)
    s["churn_probability"] = [0.9, 0.8, 0.7, 0.1]
    s["ltv"] = [100.0, 1000.0, 500.0, 50.0]
    s["value_at_risk"] = s["churn_probability"] * s["ltv"]
    s["lifecycle_segment"] = "silent"
    s["marketing_consent"] = 1.0
    s["days_to_birthday"] = [10.0, 200.0, 5.0, 200.0]  # members 0 and 2: birthday in October (the send month)
    return s


def test_priorities_decide_the_audience_and_caps_keep_the_top_ranked() -> None:
    s = _two_members()
    aud = [{"name": "win_back", "kind": "win_back", "priority": 1, "cap": 2},
           {"name": "birthday", "kind": "birthday", "priority": 2}]
    c = build_campaign(s, None, config(audiences=aud, control_share=0))
    wb = c.audience("win_back")
    # value at risk 90, 800, 350 (member 3 below the 0.5 churn threshold): the cap keeps 800 and 350, in order
    assert wb["member_id"].tolist() == [s["member_id"][1], s["member_id"][2]]
    assert wb["rank"].tolist() == [1, 2] and wb["value"].tolist() == pytest.approx([800.0, 350.0])
    # member 2 has a birthday too but is already in win-back; member 0 was capped out of win-back
    assert c.audience("birthday")["member_id"].tolist() == [s["member_id"][0]]
    row = c.summary.set_index("audience")
    assert row.loc["win_back", "capped"] == 1 and row.loc["birthday", "in_earlier_audience"] == 1
    # birthday first: member 2 goes there instead
    aud[1]["priority"] = 0
    c2 = build_campaign(s, None, config(audiences=aud, control_share=0))
    assert set(c2.audience("birthday")["member_id"]) == {s["member_id"][0], s["member_id"][2]}
    assert c2.audience("win_back")["member_id"].tolist() == [s["member_id"][1]]
    # not exclusive: a member may be in both
    c3 = build_campaign(s, None, config(audiences=aud, control_share=0, exclusive=False))
    assert s["member_id"][2] in set(c3.audience("win_back")["member_id"]) & set(c3.audience("birthday")["member_id"])


def test_control_holdout_is_seeded_per_audience_and_stable() -> None:
    ids = pd.Series([f"m{i}" for i in range(20_000)], dtype="string")
    a = control_flags(ids, "win_back", 7, 0.10)
    assert abs(a.mean() - 0.10) < 0.01
    assert (control_flags(ids, "win_back", 7, 0.10) == a).all()  # same seed, same groups
    assert (control_flags(ids, "win_back", 8, 0.10) != a).any()  # another seed, other groups
    assert (control_flags(ids, "birthday", 7, 0.10) != a).any()  # independent per audience
    half = control_flags(ids[::2].reset_index(drop=True), "win_back", 7, 0.10)
    assert (half == a[::2]).all()  # a member's group does not depend on who else is in the list
    assert not control_flags(ids, "x", 7, 0.0).any()
    s = scores_frame(5000, 1)
    c = build_campaign(s, None, config(audiences=[{"name": "lows", "kind": "content_recs", "control_share": 0.3}]))
    assert abs(c.rows["control"].mean() - 0.3) < 0.03
    assert c.summary.loc[0, "control"] == int(c.rows["control"].sum())


def test_audience_rules() -> None:
    s = scores_frame(2000, 2)
    rep = replenishment_frame(s, 2)
    c = build_campaign(s, rep, config(exclusive=False, control_share=0))
    by = s.set_index("member_id")

    t = c.audience("tier_upgrade").set_index("member_id")
    share = by["spend_to_next_tier"] / (by["qualifying_spend"] + by["spend_to_next_tier"])
    assert set(t.index) == set(share[(share <= 0.2) & (s.set_index("member_id")["marketing_consent"] != 0)].index)
    assert t["reason"].str.contains("more to reach").all()

    p = c.audience("points_expiry")
    assert (by.loc[p["member_id"], "points_expiring_30d"] >= 100).all()
    assert p["reason"].str.contains("points expire within 30 days").all()

    b = c.audience("birthday")
    bday = AS_OF + pd.to_timedelta(by.loc[b["member_id"], "days_to_birthday"], unit="D")
    assert (bday.dt.month == 10).all() and len(b) > 0

    o = c.audience("onboarding")
    assert (by.loc[o["member_id"], "lifecycle_segment"] == "new").all()
    assert not by.loc[o["member_id"], "profile_completed"].fillna(False).any()
    assert o["reason"].str.contains("100 points").all()

    r = c.audience("replenishment")
    due = rep.set_index("member_id").loc[r["member_id"], "days_until_due"]
    assert ((due >= -3) & (due < 7)).all() and len(r) > 0
    assert r["due_category"].notna().all() and r["reason"].str.contains("about every").all()

    w = c.audience("win_back")
    assert (by.loc[w["member_id"], "churn_probability"] >= 0.5).all()
    assert w["value"].is_monotonic_decreasing

    lo = c.audience("content_recs")
    assert (by.loc[lo["member_id"], "value_segment"] == "low").all()

    # offers follow the tier strategy; items are the member's top recommendations
    cfg = config(exclusive=False, control_share=0, offers={
        "exclusive_service": {"text": "VIP"}, "points_and_coupons": {"text": "PTS"},
        "content_and_recommendations": {"text": "CNT"}})
    c = build_campaign(s, rep, cfg)
    expect = c.rows["strategy"].map({"exclusive_service": "VIP", "points_and_coupons": "PTS",
                                     "content_and_recommendations": "CNT"})
    assert (c.rows["offer"] == expect).all()
    first = c.rows.iloc[0]
    assert list(first["recommended_items"]) == list(by.loc[first["member_id"], "rec_items"][:3])


def test_send_hour_is_the_members_own_when_known_else_the_evening_default() -> None:
    s = scores_frame(500, 4)
    c = build_campaign(s, None, config(audiences=[{"name": "all", "kind": "content_recs",
                                                   "value_segments": ["high", "mid", "low"]}]))
    rows = c.rows.set_index("member_id")
    by = s.set_index("member_id").loc[rows.index]
    own = by["active_actions"] >= 5
    assert (rows.loc[own, "send_hour"] == by.loc[own, "active_hour"]).all()
    assert (rows.loc[~own, "send_hour"] == 20).all()
    assert (rows["send_at"] == pd.Timestamp("2025-10-01") + pd.to_timedelta(rows["send_hour"], unit="h")).all()


@pytest.mark.parametrize(("raw", "field"), [
    ({"audiences": [{"name": "a", "kind": "teleport"}]}, "audiences.0"),
    ({"audiences": [{"name": "a", "kind": "birthday"}, {"name": "a", "kind": "win_back"}]}, "unique"),
    ({"control_share": 1.5, "audiences": [{"name": "a", "kind": "birthday"}]}, "control_share"),
    ({"audiences": [{"name": "a", "kind": "win_back", "min_churn_probability": 2}]}, "min_churn_probability"),
    ({"audiences": [{"name": "a", "kind": "birthday", "offers": {"vip": {"text": "x"}}}]}, "vip"),
    ({"audiences": [{"name": "a b", "kind": "birthday"}]}, "name"),
    ({"audiences": []}, "audiences"),
])
def test_config_errors_name_the_field(raw: dict, field: str) -> None:
    with pytest.raises(CampaignConfigError, match=field):
        parse_campaign(raw)


def test_load_campaign_errors(tmp_path: Path) -> None:
    with pytest.raises(CampaignConfigError, match="does not exist"):
        load_campaign(tmp_path / "nope.yaml")
    p = tmp_path / "bad.yaml"
    p.write_text("audiences: [unclosed\n")
    with pytest.raises(CampaignConfigError, match="not valid YAML"):
        load_campaign(p)


def test_evaluation_interval_covers_the_simulated_treatment_effect(tmp_path: Path) -> None:
    """The synthetic generator's campaign seam draws extra orders with a known per-member uplift: the estimated
    uplift in orders and in revenue per member must cover the truth (and be clearly positive)."""
    from features.store import Store
    from features.synthetic import generate_to_store
    from features.synthetic.campaign import CAMPAIGN_COUPON_SHARE, simulate_campaign_response
    from features.synthetic.catalogue import CATEGORY_NAMES
    from serving.campaigns.evaluate import evaluate_campaign

    generate_to_store(2500, 11, tmp_path / "store")
    store = Store(tmp_path / "store")
    gt = pd.read_parquet(store.path / "ground_truth.parquet")
    items = store.read("items")
    send = pd.Timestamp("2025-09-01")
    ids = gt["member_id"].astype("string")
    ctl = control_flags(ids, "test", 5, 0.5)
    resp = simulate_campaign_response(gt, items, ids[~ctl], send, control=ids[ctl], horizon_days=14,
                                      base_uplift=0.15, seed=3)
    after = Store(tmp_path / "after")
    after.path.mkdir()
    after.write("orders", pd.concat([store.read("orders"), resp.orders], ignore_index=True))
    rows = pd.DataFrame({"member_id": ids, "audience": "test", "control": ctl, "offer_cost_member": 0.1,
                         "offer_cost_conversion": 5.0})
    res = evaluate_campaign(rows, after, send, 14).iloc[0]
    assert res["treated"] + res["control"] == len(ids)

    truth = resp.truth.set_index("member_id").loc[ids.to_numpy()]
    true_orders = float(truth["potential_uplift"].mean())
    aff = gt.set_index("member_id").loc[ids.to_numpy(), [f"affinity_{c}" for c in CATEGORY_NAMES]].to_numpy()
    top = np.array(CATEGORY_NAMES)[aff.argmax(axis=1)]
    paid = (items["price"] * (1 - CAMPAIGN_COUPON_SHARE)).round(2)
    mean_paid = paid.groupby(items["category"].astype(str)).mean()
    true_revenue = float((truth["potential_uplift"].to_numpy() * mean_paid.reindex(top).to_numpy()).mean())

    assert res["orders_uplift_lo"] <= true_orders <= res["orders_uplift_hi"], (res.to_dict(), true_orders)
    assert res["revenue_uplift_lo"] <= true_revenue <= res["revenue_uplift_hi"], (res.to_dict(), true_revenue)
    assert res["orders_uplift_lo"] > 0 and res["converted_uplift"] > 0
    cost = 0.1 * res["treated"] + 5.0 * res["converted_treated"] * res["treated"]
    assert res["cost"] == pytest.approx(cost)
    assert res["roi"] == pytest.approx((res["revenue_uplift"] * res["treated"] - cost) / cost)
