"""Points: what orders and activities earn, what refunds take back, and the ledger by replay (vectorised).

Pending (`points.pending_days`, default 0 because the documents say nothing about when points are credited): an
order's points are credited when its confirmation/return window ends; until then they are pending (reported, not
spendable, not expiring), and a refund inside the window lowers what will be credited instead of debiting.

Earning (DESIGN §6, document 002): `points_per_unit` points per *full* `unit_amount` paid, floored per order
(350 yuan → 30 points), plus a flat `category_bonus` per paid line of a bonus category (家电 +5); the total is
multiplied by the tier's points multiplier (tier held just before the order) and the birthday-month multiplier,
then floored. Activity events earn their configured points (daily caps; `once` rules such as 100 for completing
the profile). A refund row reverses exactly the points its order loses: the order's points are recomputed on what
remains paid (and without the bonus of a line refunded in full); the difference is debited at the refund's time.

The ledger: credits are lots that expire `expiry.months` after they are earned; debits (redemptions, refund
reversals) consume lots first-earned-first-out. Let C(τ) be the credits earned by τ, F(τ) the credits whose expiry is
≤ τ and D_k the debits applied up to the k-th debit. The consumed-or-expired frontier X obeys
X_k = max(X_{k-1}, F(τ_k)) + d_k (lots due expire first, then the debit consumes what is left), whose solution is
X_k = D_k + max(0, cummax_j≤k (F(τ_j) − D_{j-1})): a cumulative maximum per member, vectorised. A redemption beyond the balance (X_k > C(τ_k)) is rejected; a reversal beyond it is
cut to the balance (never negative); each member's first violation is fixed and that member recomputed, until none.
`loyalty.replay.replay_ledger` is the plain sequential definition the tests check this ledger against.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from loyalty.config import LoyaltyConfig
from loyalty.frames import Inputs
from loyalty.tiers import NEVER, OrderFacts
from loyalty.timeline import (Stream, group_time_order, member_time_order, rank_in_segment, segment_cummax,
                              segment_cumsum, segment_starts)

_BIG = np.int64(2 ** 50)  # stands for "the whole amount" when a refund's or an order's amount is unknown
REVERSAL, REDEEM, FINAL = 0, 1, 2
DEBIT_KINDS = {REVERSAL: "refund_reversal", REDEEM: "redeem", FINAL: "as_of"}
STATUS_NAMES = ("applied", "rejected", "clamped")


def add_months(t: np.ndarray, months: int) -> np.ndarray:
    """t (µs) plus calendar months (month-end clipped), vectorised and monotone in t."""
    idx = pd.DatetimeIndex(np.asarray(t, dtype=np.int64).view("datetime64[us]"))
    return np.asarray((idx + pd.DateOffset(months=months)).as_unit("us").asi8, dtype=np.int64)


def months_of(t: np.ndarray) -> np.ndarray:
    return pd.DatetimeIndex(np.asarray(t, dtype=np.int64).view("datetime64[us]")).month.to_numpy()


def base_points(cents: np.ndarray, config: LoyaltyConfig) -> np.ndarray:
    """Points for a paid amount in cents: full units only (floor)."""
    p = config.points
    return (np.maximum(np.asarray(cents, dtype=np.int64), 0) // p.unit_cents()) * p.points_per_unit


def multiply(points: np.ndarray, multiplier: np.ndarray) -> np.ndarray:
    """floor(points × multiplier), robust to binary fractions (1.2 × 35 is 42, not 41)."""
    return np.floor(np.asarray(points, dtype=np.float64) * multiplier + 1e-6).astype(np.int64)


@dataclass(frozen=True)
class OrderPoints:
    """Order facts plus what points need: bonus points and the refund-time states of each order."""

    facts: OrderFacts
    bonus: np.ndarray          # per order: category bonus points of its paid lines
    # one row per (order, refund time): order row, time, cumulative refunded cents, bonus lost, voided
    ev_order: np.ndarray
    ev_t: np.ndarray
    ev_refunded: np.ndarray
    ev_bonus_lost: np.ndarray
    ev_void: np.ndarray
    orphan_refunds: np.ndarray  # per member: refund rows with no paid order before as_of


def order_points(inp: Inputs, config: LoyaltyConfig) -> OrderPoints:
    """Aggregate lines to paid orders (sorted by member, time) and replay refunds per order (cumulative, clipped
    to what was paid)."""
    lines = inp.lines
    refund = np.asarray(lines["refund"], dtype=bool)
    order = np.asarray(lines["order"], dtype=np.int64)
    t = np.asarray(lines["t"], dtype=np.int64)
    m = np.asarray(lines["m"], dtype=np.int64)
    cents = np.asarray(lines["cents"], dtype=np.int64)
    known = np.asarray(lines["known"], dtype=bool)
    bonus = np.asarray(lines["bonus"], dtype=np.int64)
    item = np.asarray(lines["item"], dtype=np.int64)
    paid = ~refund
    n_codes = int(order.max()) + 1 if len(order) else 0
    po = order[paid]
    n_paid = np.bincount(po, minlength=n_codes)
    codes = np.flatnonzero(n_paid)
    c_cents = np.bincount(po, weights=cents[paid], minlength=n_codes)[codes].round().astype(np.int64)
    c_unknown = np.bincount(po, weights=~known[paid], minlength=n_codes)[codes] > 0
    c_bonus = np.bincount(po, weights=bonus[paid], minlength=n_codes)[codes].round().astype(np.int64)
    t_min = np.full(n_codes, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(t_min, po, t[paid])
    m_min = np.full(n_codes, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(m_min, po, m[paid])
    c_t, c_m = t_min[codes], m_min[codes]
    srt = member_time_order(c_m, c_t)
    codes, o_m, o_t, o_cents, o_bonus = codes[srt], c_m[srt], c_t[srt], c_cents[srt], c_bonus[srt]
    o_known = ~c_unknown[srt]
    n_orders = len(codes)
    row_of = np.full(n_codes, -1, dtype=np.int64)
    row_of[codes] = np.arange(n_orders)

    r_code = order[refund]
    r_row = row_of[r_code] if n_codes else np.zeros(0, np.int64)
    r_tt = t[refund]
    matched = (r_row >= 0)
    matched[matched] &= r_tt[matched] >= o_t[r_row[matched]]  # a refund before its order cannot refund it
    orphan = np.bincount(m[refund][~matched], minlength=inp.n_members).astype(np.int64)
    r_row = r_row[matched]
    r_t = r_tt[matched]
    r_cents = np.where(known[refund][matched], cents[refund][matched], _BIG)
    r_item = item[refund][matched]

    # order-level cumulative refunds (sorted by order, time, amount: independent of row order)
    srt = np.lexsort((r_item, r_cents, r_t, r_row))
    r_row, r_t, r_cents, r_item = r_row[srt], r_t[srt], r_cents[srt], r_item[srt]
    cum = segment_cumsum(r_cents, r_row)
    paid_cents = o_cents[r_row]
    clipped = np.minimum(cum, paid_cents)
    prev = np.r_[0, clipped[:-1]] if len(clipped) else clipped
    prev[segment_starts(r_row)] = 0
    delta = clipped - prev
    full_bar = np.where(o_known[r_row], paid_cents, _BIG)
    void_row = cum >= full_bar

    # line-level: a bonus line refunded in full loses its bonus
    bonus_lost = np.zeros(len(r_row), dtype=np.int64)
    has_bonus = paid & (bonus > 0)
    if has_bonus.any() and len(r_row):
        bl = pd.DataFrame({"order": order[has_bonus], "item": item[has_bonus],
                           "cents": cents[has_bonus], "unknown": ~known[has_bonus], "bonus": bonus[has_bonus]})
        bl = bl[bl["item"] >= 0].groupby(["order", "item"], sort=True).agg(
            cents=("cents", "sum"), unknown=("unknown", "any"), bonus=("bonus", "sum")).reset_index()
        rr = pd.DataFrame({"pos": np.arange(len(r_row)), "order": codes[r_row], "item": r_item, "cents": r_cents})
        j = rr.merge(bl, on=["order", "item"], how="inner", suffixes=("", "_line"))
        if len(j):
            j = j.sort_values("pos", kind="stable")  # pos order = (order, time, amount) order
            key = pd.factorize(pd.MultiIndex.from_arrays([j["order"], j["item"]]), sort=False)[0]
            srt2 = np.lexsort((j["pos"].to_numpy(), key))
            jc = j.iloc[srt2]
            kc = key[srt2]
            lc = segment_cumsum(jc["cents"].to_numpy(np.int64), kc)
            bar = np.where(jc["unknown"].to_numpy(bool), _BIG, jc["cents_line"].to_numpy(np.int64))
            crossed = lc >= bar
            prev_crossed = np.r_[False, crossed[:-1]]
            prev_crossed[np.r_[True, kc[1:] != kc[:-1]]] = False
            newly = crossed & ~prev_crossed
            np.add.at(bonus_lost, jc["pos"].to_numpy()[newly], jc["bonus"].to_numpy(np.int64)[newly])

    # collapse to one state per (order, refund time)
    ev = pd.DataFrame({"row": r_row, "t": r_t, "delta": delta, "lost": bonus_lost, "void": void_row})
    ev = ev.groupby(["row", "t"], sort=True).agg(delta=("delta", "sum"), lost=("lost", "sum"), void=("void", "any"))
    ev_order = ev.index.get_level_values(0).to_numpy(np.int64)
    ev_t = ev.index.get_level_values(1).to_numpy(np.int64)
    ev_refunded = segment_cumsum(ev["delta"].to_numpy(np.int64), ev_order)
    ev_lost = segment_cumsum(ev["lost"].to_numpy(np.int64), ev_order)
    ev_void = segment_cumsum(ev["void"].to_numpy(np.int64), ev_order) > 0
    if not len(ev_order):
        ev_refunded = ev_lost = np.zeros(0, np.int64)
        ev_void = np.zeros(0, bool)

    void_t = np.full(n_orders, NEVER, dtype=np.int64)
    if ev_void.any():
        vo, vi = np.unique(ev_order[ev_void], return_index=True)
        void_t[vo] = ev_t[ev_void][vi]
    facts = OrderFacts(m=o_m, t=o_t, cents=o_cents, known=o_known, void_t=void_t,
                       r_order=ev_order, r_t=ev_t, r_cents=ev["delta"].to_numpy(np.int64))
    return OrderPoints(facts=facts, bonus=o_bonus, ev_order=ev_order, ev_t=ev_t, ev_refunded=ev_refunded,
                       ev_bonus_lost=ev_lost, ev_void=ev_void, orphan_refunds=orphan)


def _cols(**cols: object) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in cols.items()}


def _take(cols: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    idx = np.flatnonzero(mask)
    return {k: v.take(idx) for k, v in cols.items()}


def purchase_entries(op: OrderPoints, multiplier: np.ndarray, config: LoyaltyConfig, as_of: int | None = None
                     ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """Credits (one per confirmed order), refund reversals (one per order and refund time after confirmation) and
    the pending points per order, given each order's multiplier.

    An order's points are credited `points.pending_days` after it is placed (the confirmation/return window; 0 =
    at once). A refund inside the window lowers what will be credited instead of debiting the balance; an order
    whose window has not ended before `as_of` is pending (its points after the refunds so far), not in the ledger.
    """
    f = op.facts
    n_orders = len(f.m)
    earned = multiply(base_points(f.cents, config) + op.bonus, multiplier)
    row = op.ev_order
    remaining = np.where(op.ev_void, 0, base_points(f.cents[row] - op.ev_refunded, config)
                         + np.maximum(op.bonus[row] - op.ev_bonus_lost, 0))
    after = multiply(remaining, multiplier[row])
    before = np.r_[0, after[:-1]]
    first = np.r_[True, row[1:] != row[:-1]] if len(row) else np.zeros(0, bool)
    before[first] = earned[row[first]]
    drop = before - after
    pend = config.points.pending_days * 86_400_000_000
    confirm = f.t + pend if pend else f.t
    in_window = op.ev_t < confirm[row] if pend else np.zeros(len(row), dtype=bool)
    at_confirm = earned
    if in_window.any():
        at_confirm = earned - np.bincount(row[in_window], weights=drop[in_window],
                                          minlength=n_orders).round().astype(np.int64)
    posted = confirm < as_of if (pend and as_of is not None) else np.ones(n_orders, dtype=bool)
    pending = np.where(posted, 0, at_confirm)
    credits = _take(_cols(m=f.m, t=confirm, points=at_confirm, ref=np.arange(n_orders, dtype=np.int64)),
                    posted & (at_confirm > 0))
    debits = _take(_cols(m=f.m[row], t=op.ev_t, points=drop, kind=np.full(len(row), REVERSAL, dtype=np.int64),
                         ref=row.astype(np.int64)), (drop > 0) & ~in_window)
    return credits, debits, pending


def activity_entries(inp: Inputs, config: LoyaltyConfig) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Activity credits (capped per day, `once` rules; `source` codes index the activity names) and redemption
    requests (with validity)."""
    ev = inp.events
    acts = config.points.activities
    names = list(acts)
    etype = pd.Categorical(ev["type"])
    lut = np.array([names.index(c) if c in names else -1 for c in etype.categories] + [-1], dtype=np.int64)
    ty_all = lut[np.asarray(etype.codes, dtype=np.int64)]  # code -1 (missing) → the trailing -1
    sel = np.flatnonzero(ty_all >= 0)
    ev_m = np.asarray(ev["m"], dtype=np.int64)
    ev_t = np.asarray(ev["t"], dtype=np.int64)
    if len(sel):
        m, t, ty = ev_m.take(sel), ev_t.take(sel), ty_all.take(sel)
        srt = group_time_order(m, ty, t)
        m, t, ty = m[srt], t[srt], ty[srt]
        pts = np.array([acts[k].points for k in names], dtype=np.int64)[ty]
        caps = np.array([acts[k].max_per_day or 0 for k in names], dtype=np.int64)[ty]
        once = np.array([acts[k].once for k in names], dtype=bool)[ty]
        day = t // 86_400_000_000
        grp = segment_starts(m) | np.r_[True, ty[1:] != ty[:-1]]
        n_before = rank_in_segment(grp)
        n_day = rank_in_segment(grp | np.r_[True, day[1:] != day[:-1]])
        keep = ~(once & (n_before > 0)) & ((caps == 0) | (n_day < caps)) & (pts > 0)
        credits = _take(_cols(m=m, t=t, points=pts, ref=np.full(len(m), -1, dtype=np.int64), source=ty), keep)
    else:
        credits = _cols(m=np.zeros(0, np.int64), t=np.zeros(0, np.int64), points=np.zeros(0, np.int64),
                        ref=np.zeros(0, np.int64), source=np.zeros(0, np.int64))
    rcode = list(etype.categories).index(config.points.redeem_event) if config.points.redeem_event in list(
        etype.categories) else -2
    rd = np.flatnonzero(np.asarray(etype.codes) == rcode)
    val = np.asarray(ev["value"], dtype=np.float64).take(rd)
    valid = np.isfinite(val) & (val > 0) & (np.floor(np.nan_to_num(val)) == np.nan_to_num(val))
    debits = _cols(m=ev_m.take(rd), t=ev_t.take(rd), points=np.where(valid, np.nan_to_num(val), 0).astype(np.int64),
                   kind=np.full(len(rd), REDEEM, dtype=np.int64), ref=np.full(len(rd), -1, dtype=np.int64),
                   valid=valid)
    return credits, debits


@dataclass(frozen=True)
class Ledger:
    """Per-member totals (arrays indexed by member code) and the debits with their outcome."""

    earned: np.ndarray
    redeemed: np.ndarray
    reversed: np.ndarray
    expired: np.ndarray
    balance: np.ndarray
    expiring_soon: np.ndarray
    rejected: np.ndarray
    last_rejection: np.ndarray  # object array of reason strings (None when nothing was rejected)
    credits: pd.DataFrame       # m, t, points, source, ref, expires_at
    debits: pd.DataFrame        # m, t, kind, requested, applied, status, reason


def run_ledger(credits: Mapping[str, Any], debits: Mapping[str, Any], n_members: int, as_of: int,
               config: LoyaltyConfig) -> Ledger:
    """The vectorised FIFO ledger with expiry, rejection and clamping (see the module docstring).

    `credits` (m, t, points, source, ref) and `debits` (m, t, points, kind, ref, optional valid): DataFrames or
    dicts of arrays."""
    p = config.points
    cm = np.asarray(credits["m"], dtype=np.int64)
    ct = np.asarray(credits["t"], dtype=np.int64)
    cp = np.asarray(credits["points"], dtype=np.int64)
    cexp = add_months(ct, p.expiry.months) if p.expiry.months else np.full(len(ct), NEVER, dtype=np.int64)
    credits = pd.DataFrame({**{k: credits[k] for k in credits.keys()}, "expires_at": cexp}, copy=False)

    d_m = np.asarray(debits["m"], dtype=np.int64)
    valid = np.asarray(debits["valid"], dtype=bool) if "valid" in debits.keys() else np.ones(len(d_m), bool)
    dm = np.concatenate([d_m, np.arange(n_members, dtype=np.int64)])
    dt = np.concatenate([np.asarray(debits["t"], dtype=np.int64), np.full(n_members, as_of, dtype=np.int64)])
    kind = np.concatenate([np.asarray(debits["kind"], dtype=np.int64), np.full(n_members, FINAL, dtype=np.int64)])
    req = np.concatenate([np.asarray(debits["points"], dtype=np.int64), np.zeros(n_members, dtype=np.int64)])
    ok = np.concatenate([valid, np.ones(n_members, bool)])
    srt = np.lexsort((req, kind, dt, dm))
    dm, dt, kind, req, ok = dm[srt], dt[srt], kind[srt], req[srt], ok[srt]
    src = srt  # position in the concatenated input

    C = Stream(cm, ct, cp).before(dm, dt, inclusive=True)
    Fs = Stream(cm, cexp, cp)
    F = Fs.before(dm, dt, inclusive=True)
    d = np.where(ok, req, 0)
    status = np.where(ok, 0, 1).astype(np.int8)  # STATUS_NAMES codes
    reason = np.where(ok, None, "invalid value: redeem needs a positive whole number of points").astype(object)
    X = np.zeros(len(dm), dtype=np.int64)
    rows = np.arange(len(dm))
    while len(rows):
        mm = dm[rows]
        D = segment_cumsum(d[rows], mm)
        # expiry first, then the debit: X_k = max(X_{k-1}, F_k) + d_k  ⇒  X_k = D_k + max(0, cummax(F_j − D_{j-1}))
        Xs = D + np.maximum(segment_cummax(F[rows] - (D - d[rows]), mm), 0)
        X[rows] = Xs
        viol = Xs > C[rows]
        if not viol.any():
            break
        vrows = rows[viol]
        _, first = np.unique(dm[vrows], return_index=True)
        fix = vrows[first]
        excess = X[fix] - C[fix]
        is_red = kind[fix] == REDEEM
        red = fix[is_red]
        rev = fix[~is_red]
        bal = req[red] - excess[is_red]
        reason[red] = [f"redeem {a} points exceeds the balance of {b}" for a, b in zip(req[red], bal)]
        status[red] = 1
        d[red] = 0
        d[rev] = d[rev] - excess[~is_red]
        status[rev] = 2
        reason[rev] = "refund reversal cut to the remaining balance"
        rows = rows[np.isin(dm[rows], dm[fix])]

    fin = kind == FINAL
    fm = dm[fin]
    X_T = X[fin]
    D_T = segment_cumsum(d, dm)[fin]
    C_T = C[fin]
    soon = as_of + p.expiring_soon_days * 86_400_000_000
    F_soon = Fs.before(fm, np.full(len(fm), soon, dtype=np.int64), inclusive=True)
    n = n_members
    out = {k: np.zeros(n, dtype=np.int64) for k in ("earned", "redeemed", "reversed", "expired", "balance", "soon",
                                                      "rejected")}
    out["earned"][fm] = C_T
    out["balance"][fm] = C_T - X_T
    out["expired"][fm] = X_T - D_T
    out["soon"][fm] = np.maximum(F_soon - X_T, 0) if p.expiry.months else 0
    real = ~fin
    out["redeemed"] = np.bincount(dm[real & (kind == REDEEM)], weights=d[real & (kind == REDEEM)],
                                  minlength=n).astype(np.int64)
    out["reversed"] = np.bincount(dm[real & (kind == REVERSAL)], weights=d[real & (kind == REVERSAL)],
                                  minlength=n).astype(np.int64)
    rej = real & (status == 1)
    out["rejected"] = np.bincount(dm[rej], minlength=n).astype(np.int64)
    last_reason = np.full(n, None, dtype=object)
    if rej.any():
        # the latest rejection per member (rows are time-sorted within member)
        rm = dm[rej][::-1]
        um, li = np.unique(rm, return_index=True)
        last_reason[um] = reason[rej][::-1][li]
    kind_names = np.array([DEBIT_KINDS[k] for k in sorted(DEBIT_KINDS)], dtype=object)
    deb = pd.DataFrame({"m": dm[real], "t": dt[real],
                        "kind": pd.Categorical.from_codes(kind[real], categories=list(kind_names)),
                        "requested": req[real], "applied": d[real],
                        "status": pd.Categorical.from_codes(status[real], categories=list(STATUS_NAMES)),
                        "reason": pd.array(reason[real], dtype=object),
                        "ref": np.concatenate([np.asarray(debits["ref"], dtype=np.int64),
                                               np.zeros(n, np.int64)])[src][real]}, copy=False)
    return Ledger(earned=out["earned"], redeemed=out["redeemed"], reversed=out["reversed"], expired=out["expired"],
                  balance=out["balance"], expiring_soon=out["soon"], rejected=out["rejected"],
                  last_rejection=last_reason, credits=credits, debits=deb)


def merge_ledgers(parts: list[Ledger], starts: list[int]) -> Ledger:
    """One ledger from the ledgers of consecutive member ranges (member codes of part i start at starts[i])."""
    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])

    def frames(name: str) -> pd.DataFrame:
        return pd.concat([getattr(p, name).assign(m=getattr(p, name)["m"] + s) for p, s in zip(parts, starts)],
                         ignore_index=True)

    return Ledger(earned=cat("earned"), redeemed=cat("redeemed"), reversed=cat("reversed"), expired=cat("expired"),
                  balance=cat("balance"), expiring_soon=cat("expiring_soon"), rejected=cat("rejected"),
                  last_rejection=cat("last_rejection"), credits=frames("credits"), debits=frames("debits"))
