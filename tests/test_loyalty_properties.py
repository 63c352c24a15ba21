"""Property tests of the loyalty engine (hypothesis).

Each example is a small store of several independent member histories (random orders with multi-line orders,
appliance lines, full and partial refunds, activity events and redemptions), evaluated at a random as-of date
under one of the shipped ladders. The vectorised ledger is also checked against `replay_ledger`, the plain
sequential definition, and tiers against a brute-force re-computation from the raw rows.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loyalty.batch import evaluate, member_state
from loyalty.config import LoyaltyConfig, load_config, parse_config, shipped_configs
from loyalty.member import member_state as one_member
from loyalty.points import REDEEM, REVERSAL, add_months, run_ledger
from loyalty.replay import replay_ledger

START = pd.Timestamp("2023-01-01")
CONFIGS = {name: load_config(p) for name, p in shipped_configs().items()}
_nx = CONFIGS["default"].model_dump()
_nx["points"]["expiry"] = {"months": None}
NO_EXPIRY = parse_config(_nx)
_roll = CONFIGS["four_tier"].model_dump()
_roll["ladder"]["window"] = "rolling_12m"
_roll["ladder"]["downgrade"] = {"policy": "immediate"}
ROLLING = parse_config(_roll)
_cal = CONFIGS["default"].model_dump()
_cal["ladder"]["window"] = "calendar_year"
CALENDAR = parse_config(_cal)
ALL = {**CONFIGS, "rolling": ROLLING, "calendar": CALENDAR, "no_expiry": NO_EXPIRY}

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
AMOUNTS = [0.0, 35.5, 99.99, 100.0, 250.0, 350.0, 999.0, 1000.0, 2600.0, 9000.0]
EVENT_TYPES = ["checkin", "share", "review", "profile_completed", "redeem", "view"]


@st.composite
def member_history(draw, mid: str, redeem: bool = True) -> tuple[list[dict], list[dict]]:
    orders, events = [], []
    for i in range(draw(st.integers(0, 6))):
        t = START + pd.Timedelta(days=draw(st.integers(0, 700)), seconds=draw(st.sampled_from([0, 1, 3600, 43200])))
        oid = f"{mid}-o{i}"
        lines = []
        for j in range(draw(st.integers(1, 3))):
            lines.append({"order_id": oid, "member_id": mid, "ordered_at": t, "amount": draw(st.sampled_from(AMOUNTS)),
                          "category": draw(st.sampled_from(["家电", "美妆", "服饰"])), "item_id": f"i{j}",
                          "status": "paid"})
        orders += lines
        for ln in lines:
            if draw(st.integers(0, 4)) == 0:  # refund this line, fully or partly, some days later
                part = draw(st.sampled_from([1.0, 0.5]))
                orders.append({**ln, "ordered_at": t + pd.Timedelta(days=draw(st.integers(0, 60))),
                               "amount": round(ln["amount"] * part, 2),
                               "status": draw(st.sampled_from(["refunded", "cancelled"]))})
    types = EVENT_TYPES if redeem else [x for x in EVENT_TYPES if x != "redeem"]
    for _ in range(draw(st.integers(0, 6))):
        ty = draw(st.sampled_from(types))
        events.append({"member_id": mid, "occurred_at": START + pd.Timedelta(days=draw(st.integers(0, 700)),
                                                                               hours=draw(st.integers(0, 23))),
                       "type": ty, "value": float(draw(st.sampled_from([5, 10, 30, 100, 500, -1]))) if ty == "redeem"
                       else None})
    return orders, events


@st.composite
def stores(draw, redeem: bool = True, configs: tuple[str, ...] = tuple(ALL)):
    orders, events = [], []
    for k in range(draw(st.integers(1, 5))):
        o, e = draw(member_history(f"m{k}", redeem))
        orders += o
        events += e
    if not orders:  # the orders table always exists; give one member a purchase
        orders.append({"order_id": "x-o", "member_id": "x", "ordered_at": START, "amount": 120.0, "category": "美妆",
                       "item_id": "i0", "status": "paid"})
    o = pd.DataFrame(orders)
    ev = pd.DataFrame(events, columns=["member_id", "occurred_at", "type", "value"])
    as_of = START + pd.Timedelta(days=draw(st.integers(20, 800)))
    name = draw(st.sampled_from(configs))
    return o, ev, as_of, name


def _eq(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


@FAST
@given(stores(), st.randoms(use_true_random=False))
def test_order_independent_idempotent_and_consistent(data, rnd) -> None:
    o, ev, as_of, name = data
    cfg = ALL[name]
    base = evaluate(o, ev, None, as_of, cfg)
    s = base.frame
    # row order and exact duplicate rows change nothing
    o2 = pd.concat([o, o.sample(frac=0.5, random_state=rnd.randint(0, 10**6))])
    ev2 = pd.concat([ev, ev.sample(frac=0.5, random_state=rnd.randint(0, 10**6))]) if len(ev) else ev
    o2 = o2.sample(frac=1.0, random_state=rnd.randint(0, 10**6))
    ev2 = ev2.sample(frac=1.0, random_state=rnd.randint(0, 10**6)) if len(ev2) else ev2
    _eq(s, member_state(o2, ev2, None, as_of, cfg))
    # the ledger never goes negative and adds up
    pts = s[["points_balance", "points_earned", "points_redeemed", "points_reversed", "points_expired",
             "points_expiring_30d"]]
    assert (pts >= 0).all().all()
    assert (s.points_earned - s.points_redeemed - s.points_reversed - s.points_expired == s.points_balance).all()
    assert (s.points_expiring_30d <= s.points_balance).all()
    # expiry never removes unexpired points: at most the lots whose expiry date has passed
    cr = base.ledger.credits
    due = np.bincount(cr["m"][cr["expires_at"] <= base.inputs.as_of], weights=cr["points"][cr["expires_at"] <= base.inputs.as_of],
                      minlength=len(s))
    assert (s.points_expired.to_numpy() <= due).all()
    # single-member path (plain-Python replay) == vectorised batch, for every member of the store
    for mid in s.member_id:
        one = one_member(o, ev, None, as_of, cfg, member_id=mid).model_dump()
        row = s.loc[s.member_id == mid].iloc[0]
        for col in s.columns:
            a, b = one[col], row[col]
            if pd.isna(b) if not isinstance(b, (list, np.ndarray)) else False:
                assert a is None, (mid, col, a, b)
            elif isinstance(b, float):
                assert a == pytest.approx(b), (mid, col, a, b)
            elif isinstance(b, pd.Timestamp):
                assert pd.Timestamp(a) == b, (mid, col)
            else:
                assert a == b, (mid, col, a, b)


@FAST
@given(stores(redeem=False, configs=("no_expiry",)), st.sampled_from([0, 1, 2, 3, 4]))
def test_refund_exactly_reverses_the_points_of_its_order(data, pick) -> None:
    o, ev, as_of, _ = data
    cfg = NO_EXPIRY
    o = o[o.ordered_at < as_of - pd.Timedelta(days=1)]
    paid = o[o.status == "paid"]
    if paid.empty:
        return
    # the latest paid order of some member (nothing after it can depend on it), refunded in full just before as_of
    mid = sorted(paid.member_id.unique())[pick % paid.member_id.nunique()]
    last = paid[paid.member_id == mid].sort_values(["ordered_at", "order_id"]).order_id.iloc[-1]
    t_last = paid[paid.order_id == last].ordered_at.iloc[0]
    if (paid[(paid.member_id == mid)].ordered_at == t_last).sum() != (paid.order_id == last).sum():
        return  # another order at the same instant: "latest" is ambiguous
    others = o[(o.order_id != last)]
    without = member_state(others, ev, None, as_of, cfg).set_index("member_id")
    if mid not in without.index:  # the member's only history was this order
        without.loc[mid, ["points_earned", "points_balance", "points_reversed"]] = 0
    mine = o[o.order_id == last]
    with_order = member_state(pd.concat([others, mine]), ev, None, as_of, cfg).set_index("member_id")
    refunds = mine[mine.status == "paid"].assign(status="refunded",
                                                 ordered_at=as_of - pd.Timedelta(seconds=1))
    prior = mine[mine.status != "paid"]  # earlier partial refunds of these lines: refund what is left
    if len(prior):
        left = mine[mine.status == "paid"].groupby("item_id").amount.sum() - prior.groupby("item_id").amount.sum()
        refunds = refunds.assign(amount=refunds.item_id.map(left.fillna(refunds.set_index("item_id").amount)).clip(lower=0))
    refunded = member_state(pd.concat([others, mine, refunds]), ev, None, as_of, cfg).set_index("member_id")
    gained = with_order.loc[mid, "points_earned"] - without.loc[mid, "points_earned"]
    net = with_order.loc[mid, "points_balance"] - without.loc[mid, "points_balance"]
    assert refunded.loc[mid, "points_earned"] == with_order.loc[mid, "points_earned"]
    assert refunded.loc[mid, "points_balance"] == without.loc[mid, "points_balance"]
    assert refunded.loc[mid, "points_reversed"] - with_order.loc[mid, "points_reversed"] == net
    assert net <= gained


@FAST
@given(stores(), st.sampled_from(AMOUNTS[1:]), st.integers(0, 700))
def test_tier_monotone_in_spend(data, amount, day) -> None:
    o, ev, as_of, name = data
    cfg = ALL[name]
    before = member_state(o, ev, None, as_of, cfg).set_index("member_id")
    mid = before.index[0]
    extra = pd.DataFrame([{"order_id": "extra", "member_id": mid, "ordered_at": START + pd.Timedelta(days=day),
                           "amount": amount, "category": "美妆", "item_id": "i0", "status": "paid"}])
    after = member_state(pd.concat([o, extra]), ev, None, as_of, cfg).set_index("member_id")
    assert after.loc[mid, "tier_rank"] >= before.loc[mid, "tier_rank"]
    others = [m for m in before.index if m != mid]
    assert (after.loc[others, "tier_rank"] == before.loc[others, "tier_rank"]).all()
    # raising an amount never lowers a tier either
    bigger = o.assign(amount=np.where(o.status == "paid", o.amount * 2, o.amount))
    doubled = member_state(bigger, ev, None, as_of, cfg).set_index("member_id")
    assert (doubled.tier_rank >= before.tier_rank).all()


def _oracle_tiers(o: pd.DataFrame, ev: pd.DataFrame, as_of: pd.Timestamp, cfg: LoyaltyConfig) -> dict[str, int]:
    """Brute force, immediate policy: recompute each tier's conditions from the raw rows with plain pandas."""
    o = o[o.ordered_at < as_of].drop_duplicates()
    ev = ev[ev.occurred_at < as_of].drop_duplicates()
    paid = o[o.status == "paid"]
    ot = paid.groupby("order_id").agg(member_id=("member_id", "min"), t=("ordered_at", "min"), amount=("amount", "sum"))
    ref = o[o.status != "paid"]
    ref = ref[ref.order_id.isin(ot.index)]
    ref = ref[ref.ordered_at >= ot.loc[ref.order_id, "t"].to_numpy()]
    refunded = ref.groupby("order_id").amount.sum().reindex(ot.index, fill_value=0.0)
    cents = (ot.amount * 100).round()
    rc = (refunded * 100).round()
    ot = ot.assign(net=(cents - np.minimum(rc, cents)) / 100, alive=rc < cents)

    def in_window(t: pd.Series, w: str) -> pd.Series:
        if w == "lifetime":
            return pd.Series(True, index=t.index)
        if w == "rolling_12m":
            return pd.Series([as_of <= x + pd.DateOffset(months=12) for x in t], index=t.index)
        return t.dt.year == as_of.year

    out = {}
    for mid in sorted(set(o.member_id) | set(ev.member_id)):
        mo = ot[ot.member_id == mid]
        rank = 0
        for i, tier in enumerate(cfg.ladder.tiers[1:], start=1):
            w = cfg.tier_window(tier)
            sel = mo[in_window(mo.t, w)]
            ok = True
            if tier.spend_threshold_cents() is not None:
                ok &= round(sel.net.sum() * 100) >= tier.spend_threshold_cents()
            if tier.min_orders is not None:
                ok &= int(sel.alive.sum()) >= tier.min_orders
            if tier.min_interactions is not None:
                me = ev[(ev.member_id == mid) & ev.type.isin(tier.interaction_types)]
                ok &= int(in_window(me.occurred_at, w).sum()) >= tier.min_interactions
            if ok:
                rank = i
        out[mid] = rank
    return out


@FAST
@given(stores(configs=("default", "order_count", "rolling", "calendar")))
def test_tiers_match_brute_force(data) -> None:
    o, ev, as_of, name = data
    cfg = ALL[name]
    s = member_state(o, ev, None, as_of, cfg).set_index("member_id")
    want = _oracle_tiers(o, ev, as_of, cfg)
    got = {m: int(r) for m, r in s.tier_rank.items()}
    assert got == want


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 900), st.integers(1, 60)), max_size=14),
       st.lists(st.tuples(st.integers(0, 3), st.integers(0, 900), st.sampled_from([REVERSAL, REDEEM]),
                          st.integers(-5, 80)), max_size=10),
       st.integers(0, 950), st.sampled_from([None, 1, 12]))
def test_vectorised_ledger_equals_sequential_replay(credits, debits, as_day, months) -> None:
    """FIFO expiry, rejection and clamping: the cummax ledger gives what an event-by-event replay gives."""
    day = 86_400_000_000
    t0 = int(START.value // 1000)
    base = load_config().model_dump()
    base["points"]["expiry"] = {"months": months}
    cfg = parse_config(base)
    as_of = t0 + as_day * day
    cr = pd.DataFrame([{"m": m, "t": t0 + d * day, "points": p, "source": "x", "ref": -1}
                       for m, d, p in credits if t0 + d * day < as_of], columns=["m", "t", "points", "source", "ref"])
    db = pd.DataFrame([{"m": m, "t": t0 + d * day, "points": max(p, 0), "kind": k, "ref": -1,
                        "valid": (k == REVERSAL and p >= 0) or (k == REDEEM and p > 0)}
                       for m, d, k, p in debits if t0 + d * day < as_of],
                      columns=["m", "t", "points", "kind", "ref", "valid"])
    db = db[~((db.kind == REVERSAL) & ~db.valid)]  # reversals are always valid amounts
    cr = cr.astype({"m": np.int64, "t": np.int64, "points": np.int64, "ref": np.int64})
    db = db.astype({"m": np.int64, "t": np.int64, "points": np.int64, "kind": np.int64, "ref": np.int64, "valid": bool})
    led = run_ledger(cr, db, 4, as_of, cfg)
    soon = as_of + 30 * day
    for m in range(4):
        c = cr[cr.m == m]
        exp = add_months(c.t.to_numpy(), months) if months else np.full(len(c), np.iinfo(np.int64).max)
        d = db[db.m == m]
        ref = replay_ledger(list(zip(c.t.tolist(), c.points.tolist(), exp.tolist())),
                            [(t, k, p if v else 0) for t, k, p, v in zip(d.t, d.kind, d.points, d.valid)],
                            as_of, soon, d.valid.tolist())
        ref = {k: v for k, v in ref.items() if k not in ("outcome", "last_rejection")}
        got = {"earned": led.earned[m], "redeemed": led.redeemed[m], "reversed": led.reversed[m],
               "expired": led.expired[m], "balance": led.balance[m], "expiring_soon": led.expiring_soon[m],
               "rejected": led.rejected[m]}
        assert got == ref, (m, got, ref)
