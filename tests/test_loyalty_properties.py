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

from loyalty.batch import evaluate
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
_pend = CONFIGS["default"].model_dump()
_pend["points"]["pending_days"] = 14
PENDING = parse_config(_pend)
_pend["points"]["expiry"] = {"months": None}
PENDING_NO_EXPIRY = parse_config(_pend)
ALL = {**CONFIGS, "rolling": ROLLING, "calendar": CALENDAR, "no_expiry": NO_EXPIRY, "pending": PENDING}

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


def _same(a: object, b: object) -> bool:
    if a is None or (isinstance(a, float) and np.isnan(a)):
        return bool(pd.isna(b))
    if isinstance(b, pd.Timestamp):
        return pd.Timestamp(a) == b
    if isinstance(b, float):
        return a == pytest.approx(b, abs=1e-9)
    return bool(a == b)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stores(), st.randoms(use_true_random=False), st.integers(0, 12), st.integers(-30, 800))
def test_batch_equals_single_member_replay_under_shuffles_and_duplicates(data, rnd, birth_month, joined) -> None:
    """The vectorised batch on shuffled rows with duplicates == the plain replay of each member on the original rows
    (order independence, idempotence and batch == single in one), and its ledger is non-negative and adds up."""
    o, ev, as_of, name = data
    cfg = ALL[name]
    ids = sorted(set(o.member_id))
    mem = pd.DataFrame({"member_id": ids + ["registered-only"],
                        "birthday": [pd.Timestamp(f"1990-{birth_month:02d}-15") if birth_month else pd.NaT] * (len(ids) + 1),
                        "joined_at": [START + pd.Timedelta(days=joined)] * (len(ids) + 1)})
    o2 = pd.concat([o, o.sample(frac=0.5, random_state=rnd.randint(0, 10**6))])
    o2 = o2.sample(frac=1.0, random_state=rnd.randint(0, 10**6))
    ev2 = ev
    if len(ev):
        ev2 = pd.concat([ev, ev.sample(frac=0.5, random_state=rnd.randint(0, 10**6))])
        ev2 = ev2.sample(frac=1.0, random_state=rnd.randint(0, 10**6))
    res = evaluate(o2, ev2, mem.sample(frac=1.0, random_state=rnd.randint(0, 10**6)), as_of, cfg)
    s = res.frame
    for mid in s.member_id:
        one = one_member(o, ev, mem, as_of, cfg, member_id=mid).model_dump()
        row = s.loc[s.member_id == mid].iloc[0]
        bad = {c: (one[c], row[c]) for c in s.columns if not _same(one[c], row[c])}
        assert not bad, (name, mid, bad)
    pts = s[["points_balance", "points_earned", "points_redeemed", "points_reversed", "points_expired",
             "points_expiring_30d"]]
    assert (pts >= 0).all().all()
    assert (s.points_earned - s.points_redeemed - s.points_reversed - s.points_expired == s.points_balance).all()
    assert (s.points_expiring_30d <= s.points_balance).all()
    # expiry never removes unexpired points: at most the lots whose expiry date has passed
    cr = res.ledger.credits
    due_rows = cr["expires_at"] <= res.inputs.as_of
    due = np.bincount(cr["m"][due_rows], weights=cr["points"][due_rows], minlength=len(s))
    assert (s.points_expired.to_numpy() <= due).all()
    if not len(res.ledger.debits):  # nothing consumed: exactly the due lots expire
        assert (s.points_expired.to_numpy() == due).all()


def _one(o: pd.DataFrame, ev: pd.DataFrame, as_of: pd.Timestamp, cfg: LoyaltyConfig, mid: str) -> dict:
    try:
        return one_member(o, ev, None, as_of, cfg, member_id=mid).model_dump()
    except LookupError:
        return {"points_earned": 0, "points_balance": 0, "points_reversed": 0, "tier_rank": 0, "points_pending": 0}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stores(redeem=False, configs=("no_expiry",)), st.integers(0, 4))
def test_refund_exactly_reverses_the_points_of_its_order(data, pick) -> None:
    o, ev, as_of, _ = data
    cfg = NO_EXPIRY
    o = o[o.ordered_at < as_of - pd.Timedelta(days=1)]
    paid = o[o.status == "paid"]
    if paid.empty:
        return
    # the latest paid order of a member (nothing after it depends on it), refunded in full just before as_of
    mid = sorted(paid.member_id.unique())[pick % paid.member_id.nunique()]
    last = paid[paid.member_id == mid].sort_values(["ordered_at", "order_id"]).order_id.iloc[-1]
    t_last = paid[paid.order_id == last].ordered_at.iloc[0]
    if (paid[paid.member_id == mid].ordered_at == t_last).sum() != (paid.order_id == last).sum():
        return  # another order at the same instant: "latest" is ambiguous
    others = o[o.order_id != last]
    mine = o[o.order_id == last]
    without = _one(others, ev, as_of, cfg, mid)
    with_order = _one(o, ev, as_of, cfg, mid)
    left = (mine[mine.status == "paid"].groupby("item_id").amount.sum()
            .sub(mine[mine.status != "paid"].groupby("item_id").amount.sum(), fill_value=0).clip(lower=0))
    refunds = pd.DataFrame([{"order_id": last, "member_id": mid, "ordered_at": as_of - pd.Timedelta(seconds=1),
                             "amount": round(a, 2), "category": "美妆", "item_id": it, "status": "refunded"}
                            for it, a in left.items()])
    refunded = _one(pd.concat([o, refunds]), ev, as_of, cfg, mid)
    gained = with_order["points_balance"] - without["points_balance"]
    assert refunded["points_earned"] == with_order["points_earned"]
    assert refunded["points_balance"] == without["points_balance"]
    assert refunded["points_reversed"] - with_order["points_reversed"] == gained


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stores(), st.sampled_from(AMOUNTS[1:]), st.integers(0, 700), st.integers(0, 4))
def test_tier_monotone_in_spend(data, amount, day, pick) -> None:
    o, ev, as_of, name = data
    cfg = ALL[name]
    mids = sorted(set(o.member_id) | set(ev.member_id))
    mid = mids[pick % len(mids)]
    before = _one(o, ev, as_of, cfg, mid)["tier_rank"]
    if before is None:
        return
    extra = pd.DataFrame([{"order_id": "extra", "member_id": mid, "ordered_at": START + pd.Timedelta(days=day),
                           "amount": amount, "category": "美妆", "item_id": "i0", "status": "paid"}])
    assert _one(pd.concat([o, extra]), ev, as_of, cfg, mid)["tier_rank"] >= before
    # raising the paid amounts never lowers a tier either
    bigger = o.assign(amount=np.where(o.status == "paid", o.amount * 2, o.amount))
    assert _one(bigger, ev, as_of, cfg, mid)["tier_rank"] >= before


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
    n_refunds = ref.groupby("order_id").size().reindex(ot.index, fill_value=0)
    cents = (ot.amount * 100).round()
    rc = (refunded * 100).round()
    # an order is voided once refund rows give back all it paid (a 0-yuan order with no refund rows stays alive)
    voided = (n_refunds > 0) & (rc >= cents)
    ot = ot.assign(net=((cents - np.minimum(rc, cents)) / 100).astype(float), alive=(~voided).astype(bool))

    def in_window(t: pd.Series, w: str) -> np.ndarray:
        if w == "lifetime":
            return np.ones(len(t), dtype=bool)
        if w == "rolling_12m":
            return np.array([as_of <= x + pd.DateOffset(months=12) for x in t], dtype=bool)
        return np.array([x.year == as_of.year for x in t], dtype=bool)

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


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stores(configs=("default", "order_count", "rolling", "calendar", "four_tier")))
def test_tiers_match_brute_force(data) -> None:
    """Tiers (immediate policy) equal a brute-force re-computation from the raw rows; the grace ladder
    (four_tier) is never below it."""
    o, ev, as_of, name = data
    cfg = ALL[name]
    want = _oracle_tiers(o, ev, as_of, cfg)
    got = {m: _one(o, ev, as_of, cfg, m)["tier_rank"] for m in want}
    if cfg.ladder.downgrade.policy == "immediate":
        assert got == want
    else:
        assert all(got[m] >= want[m] for m in want)


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


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stores(configs=("pending",)), st.integers(0, 13))
def test_pending_points_become_balance_after_the_window(data, days_before) -> None:
    """With nothing new happening, every point pending at T is earned and in the balance one window later
    (no expiry in between, so nothing else moves); batch path."""
    o, ev, as_of, _ = data
    cfg = PENDING_NO_EXPIRY
    # make pending likely: put as_of a few days after some order
    paid_t = sorted(o.loc[o.status == "paid", "ordered_at"])
    as_of = paid_t[days_before % len(paid_t)] + pd.Timedelta(days=1 + days_before)
    o, ev = o[o.ordered_at < as_of], ev[ev.occurred_at < as_of]
    now = evaluate(o, ev, None, as_of, cfg).frame.set_index("member_id")
    later = evaluate(o, ev, None, as_of + pd.Timedelta(days=cfg.points.pending_days), cfg).frame
    later = later.set_index("member_id").loc[now.index]
    assert (later.points_pending == 0).all()
    assert (later.points_earned == now.points_earned + now.points_pending).all()
    assert (later.points_balance == now.points_balance + now.points_pending).all()
    assert (later.points_reversed == now.points_reversed).all()
    assert (later.redemptions_rejected == now.redemptions_rejected).all()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stores(configs=("pending",)), st.integers(0, 4), st.integers(1, 13))
def test_refund_inside_the_window_removes_the_pending_points(data, pick, days) -> None:
    """A member's latest order, fully refunded before its 14-day window ends, leaves the pending points as if it
    had never been placed, and never touches the balance (no reversal)."""
    o, ev, _, _ = data
    cfg = PENDING
    paid = o[o.status == "paid"]
    mid = sorted(paid.member_id.unique())[pick % paid.member_id.nunique()]
    last = paid[paid.member_id == mid].sort_values(["ordered_at", "order_id"]).order_id.iloc[-1]
    t_last = paid[paid.order_id == last].ordered_at.iloc[0]
    if (paid[paid.member_id == mid].ordered_at == t_last).sum() != (paid.order_id == last).sum():
        return  # another order at the same instant: "latest" is ambiguous
    as_of = t_last + pd.Timedelta(days=days)  # inside the window
    mine = o[(o.order_id == last) & (o.ordered_at < as_of)]
    left = (mine[mine.status == "paid"].groupby("item_id").amount.sum()
            .sub(mine[mine.status != "paid"].groupby("item_id").amount.sum(), fill_value=0).clip(lower=0))
    refunds = pd.DataFrame([{"order_id": last, "member_id": mid, "ordered_at": as_of - pd.Timedelta(seconds=1),
                             "amount": round(a, 2), "category": "美妆", "item_id": it, "status": "refunded"}
                            for it, a in left.items()])
    with_order = _one(o, ev, as_of, cfg, mid)
    without = _one(o[o.order_id != last], ev, as_of, cfg, mid)
    refunded = _one(pd.concat([o, refunds]), ev, as_of, cfg, mid)
    assert with_order["points_pending"] >= without["points_pending"]
    assert refunded["points_pending"] == without["points_pending"]
    for k in ("points_balance", "points_earned", "points_reversed"):
        assert refunded[k] == with_order[k] == without[k], k
