"""Loyalty state of every member at an as-of date, vectorised (no per-member loop): tiers, points, segments.

`member_state(orders, events, members, as_of)` is what batch scoring, serving and the CLI call. `evaluate()`
returns the same frame plus the ledger entries (what the single-member path shows as a statement).
`evaluate_prepared(inputs)` runs the rules on inputs already prepared — by `loyalty.frames.prepare` from
DataFrames, or by `loyalty.arrays.prepare_arrays` from integer arrays an engine has coded (the feature pipeline on
DuckDB: `features.loyalty_arrays`) — in member parts of bounded size.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import pyarrow as pa

from features.contract import MEMBER_ID
from loyalty.benefits import benefit_columns
from loyalty.config import LoyaltyConfig, load_config
from loyalty.frames import NO_TIME, Inputs, from_us, prepare
from loyalty.points import (Ledger, activity_entries, merge_ledgers, months_of, order_points, purchase_entries,
                            run_ledger)
from loyalty.segments import DAY_US, lifecycle_segment, strategy, value_segment
from loyalty.tiers import UNKNOWN, Qualifier

STATE_COLUMNS = (
    MEMBER_ID, "tier", "tier_rank", "tier_reason", "next_tier", "spend_to_next_tier", "orders_to_next_tier",
    "interactions_to_next_tier", "qualifying_spend", "qualifying_orders", "points_balance", "points_earned",
    "points_redeemed", "points_reversed", "points_expired", "points_expiring_30d", "points_pending",
    "redemptions_rejected",
    "last_rejection_reason", "discount_rate", "points_multiplier", "priority_shipping", "dedicated_service",
    "birthday_gift", "member_day", "value_segment", "lifecycle_segment", "strategy", "spend_12m", "orders_12m",
    "last_order_at", "days_since_last_order", "orphan_refunds", "birth_month",
)


@dataclass(frozen=True)
class Evaluation:
    frame: pd.DataFrame
    ledger: Ledger
    inputs: Inputs
    timings: dict[str, float]  # wall (and `_cpu`) seconds per phase: prepare, orders, tiers, points, ledger…


class _Clock:
    """Wall and CPU seconds per phase (CPU of the calling thread)."""

    def __init__(self) -> None:
        self.t, self.c = time.perf_counter(), time.thread_time()
        self.out: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        self.out[name] = round(now - self.t, 3)
        self.out[f"{name}_cpu"] = round(cpu - self.c, 3)
        self.t, self.c = now, cpu


def _ints(values: np.ndarray, missing: np.ndarray) -> pd.arrays.IntegerArray:
    """Nullable Int64 column: `values` where not `missing`."""
    return pd.arrays.IntegerArray(np.where(missing, 0, values).astype(np.int64), np.asarray(missing, dtype=bool))


def _labels(codes: np.ndarray, labels: list[str | None]) -> pd.arrays.ArrowStringArray:
    """String column from small-integer codes into `labels` (index -1 = the last label): one Arrow take, no
    Python string per row."""
    table = pa.array(labels, type=pa.large_string())
    idx = np.where(np.asarray(codes) < 0, len(labels) - 1, codes).astype(np.int64)
    return pd.array(pd.arrays.ArrowStringArray(table.take(pa.array(idx))), dtype="string")


def _event_types(config: LoyaltyConfig) -> set[str]:
    types = set(config.points.activities) | {config.points.redeem_event}
    for t in config.ladder.tiers:
        if t.min_interactions is not None:
            types |= set(t.interaction_types)
    return types


PARALLEL_LINES = 500_000  # order lines from which the members are evaluated in two halves, in two threads


def evaluate(orders: pd.DataFrame, events: pd.DataFrame | None, members: pd.DataFrame | None, as_of: object,
             config: LoyaltyConfig | None = None) -> Evaluation:
    """Replay every member's history strictly before `as_of` under `config` (default: the shipped six-tier).

    The rules are per member, so on big inputs the members are cut into two halves (by code, balanced by order
    lines) evaluated in two threads: the work is numpy/Arrow kernels that release the GIL. Results do not depend
    on the cut (each half is a complete set of members)."""
    cfg = config or load_config()
    clock = _Clock()
    inp = prepare(orders, events, members, as_of, event_types=_event_types(cfg),
                  category_bonus=cfg.points.category_bonus)
    clock.lap("prepare")
    return evaluate_prepared(inp, cfg, timings=clock.out)


def evaluate_prepared(inp: Inputs, config: LoyaltyConfig | None = None, *, part_lines: int | None = None,
                      keep_ledger: bool = True, timings: dict[str, float] | None = None) -> Evaluation:
    """The rules on already prepared inputs (`loyalty.frames.prepare`, or `loyalty.arrays.prepare_arrays` when an
    engine has coded the ids): what `evaluate` runs after preparing.

    From PARALLEL_LINES order lines the members are cut into parts (contiguous code ranges balanced by order lines:
    two, or more when `part_lines` caps the lines per part to bound memory) evaluated two at a time in two threads.
    `keep_ledger=False` drops each part's ledger entries once its totals are in the frame (memory; the returned
    ledger then holds the totals only). `inp`'s rows are moved into the parts (it is empty afterwards)."""
    cfg = config or load_config()
    clock = _Clock()
    times0 = dict(timings or {})
    n_lines = len(inp.lines["m"])
    if n_lines < PARALLEL_LINES or inp.n_members < 2:
        frame, ledger, times = _rules(inp, cfg)
        if not keep_ledger:
            ledger = _totals_only(ledger)
        return Evaluation(frame=frame, ledger=ledger, inputs=inp, timings={**times0, **times})
    k = 2
    if part_lines:
        k = max(2, 2 * -(-n_lines // (2 * int(part_lines))))
    k = min(k, inp.n_members)
    empty = ({key: v[:0] for key, v in inp.lines.items()}, {key: v[:0] for key, v in inp.events.items()})
    parts = split_members(inp, k)  # moves the rows into the parts
    meta = replace(inp, lines=empty[0], events=empty[1])

    def run(part: Inputs) -> tuple[pd.DataFrame, Ledger, dict[str, float]]:
        frame, ledger, times = _rules(part, cfg, True)
        return frame, (ledger if keep_ledger else _totals_only(ledger)), times

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(run, part) for _, part in parts]
        del parts
        results = [f.result() for f in futures]
    clock.lap("rules")
    starts = np.cumsum([0] + [len(r[0]) for r in results])[:-1]
    frame = pd.concat([r[0] for r in results], ignore_index=True)
    ledger = merge_ledgers([r[1] for r in results], [int(s) for s in starts])
    times = {**times0, **clock.out}
    for _, _, t in results:  # per phase: summed over the parts (thread wall and CPU seconds)
        for key, v in t.items():
            times[key] = round(times.get(key, 0.0) + v, 3)
    clock.lap("merge")
    times.update({key: v for key, v in clock.out.items() if key.startswith("merge")})
    return Evaluation(frame=frame, ledger=ledger, inputs=meta, timings=times)


def _totals_only(ledger: Ledger) -> Ledger:
    """The ledger's per-member totals without its entry frames (credits, debits: emptied)."""
    return replace(ledger, credits=ledger.credits.iloc[:0], debits=ledger.debits.iloc[:0])


def split_members(inp: Inputs, k: int) -> list[tuple[int, Inputs]]:
    """Cut the members into `k` contiguous code ranges holding about the same number of order lines; each part's
    member (and order) codes are renumbered from 0. Returns (first member code, part) pairs. The rows are moved:
    `inp.lines` and `inp.events` are empty afterwards."""
    n = inp.n_members
    m = inp.lines["m"]
    cum = np.cumsum(np.bincount(m, minlength=n))
    cuts = [0] + [int(np.searchsorted(cum, len(m) * i / k)) + 1 for i in range(1, k)] + [n]
    cuts = sorted(set(min(max(c, 0), n) for c in cuts))
    em = np.asarray(inp.events["m"])
    ranges = list(zip(cuts[:-1], cuts[1:]))
    li = [np.flatnonzero((m >= lo) & (m < hi)) for lo, hi in ranges]
    ei = [np.flatnonzero((em >= lo) & (em < hi)) for lo, hi in ranges]
    del m, em
    lines: list[dict] = [{} for _ in ranges]
    events: list[dict] = [{} for _ in ranges]
    n_codes = int(inp.lines["order"].max()) + 1 if len(inp.lines["order"]) else 0
    # column by column, dropping each full column once cut (memory: one extra column at a time, not a second
    # copy of the rows); `inp` is left without rows
    for c in list(inp.lines):
        v = inp.lines.pop(c)
        for j, (lo, _) in enumerate(ranges):
            x = v.take(li[j])
            if c == "m":
                x -= lo
            elif c == "order":  # dense order codes of this part
                present = np.zeros(n_codes, dtype=bool)
                present[x] = True
                x = (np.cumsum(present) - 1).take(x)
            lines[j][c] = x
        del v
    for c in list(inp.events):
        v = inp.events.pop(c)
        for j, (lo, _) in enumerate(ranges):
            x = v.take(ei[j]) if isinstance(v, np.ndarray) else v[ei[j]]
            events[j][c] = x - lo if c == "m" else x
        del v
    return [(lo, replace(inp, member_ids=inp.member_ids[lo:hi], lines=lines[j], events=events[j],
                         birth_month=inp.birth_month[lo:hi], joined=inp.joined[lo:hi],
                         first_event=inp.first_event[lo:hi])) for j, (lo, hi) in enumerate(ranges)]


def _rules(inp: Inputs, cfg: LoyaltyConfig, consume: bool = False) -> tuple[pd.DataFrame, Ledger, dict[str, float]]:
    """Every rule on prepared inputs: the state frame, the ledger and the seconds per phase (this thread's).
    `consume`: the order lines are dropped once aggregated to orders (memory; for private parts only)."""
    clock = _Clock()
    n, T = inp.n_members, inp.as_of
    op = order_points(inp, cfg)
    if consume:
        inp.lines.clear()
    clock.lap("orders")
    f = op.facts
    ev = inp.events
    q = Qualifier(cfg, f, ev["m"], ev["t"], ev["type"])

    m_all = np.arange(n, dtype=np.int64)
    t_all = np.full(n, T, dtype=np.int64)
    rank = q.held(m_all, t_all)
    gaps = q.gaps(m_all, t_all, rank)
    q_cents, q_complete = q.spend(m_all, t_all, cfg.ladder.window)
    q_orders = q.orders(m_all, t_all, cfg.ladder.window)
    clock.lap("tiers")

    # points multiplier of each order: tier held just before it × birthday month
    tiers = cfg.ladder.tiers
    tier_mult = np.array([t.benefits.points_multiplier for t in tiers], dtype=np.float64)
    mult = np.ones(len(f.m), dtype=np.float64)
    if cfg.points.apply_tier_multiplier:
        if np.all(tier_mult == tier_mult[0]):
            mult *= tier_mult[0]
        elif len(f.m):
            mult *= tier_mult[np.maximum(q.held(f.m, f.t), 0)]
    if cfg.points.birthday_month_multiplier != 1.0 and len(f.m):
        bm = inp.birth_month[f.m]
        mult = np.where((bm > 0) & (bm == months_of(f.t)), mult * cfg.points.birthday_month_multiplier, mult)
    clock.lap("tier_at_orders")
    p_cred, p_deb, pending = purchase_entries(op, mult, cfg, T)
    a_cred, a_deb = activity_entries(inp, cfg)
    sources = pd.Categorical.from_codes(
        np.concatenate([np.zeros(len(p_cred["m"]), np.int64), a_cred.pop("source") + 1]),
        categories=["order", *cfg.points.activities])
    credits = {k: np.concatenate([p_cred[k], a_cred[k]]) for k in ("m", "t", "points", "ref")}
    credits["source"] = sources
    p_deb["valid"] = np.ones(len(p_deb["m"]), dtype=bool)
    debits = {k: np.concatenate([p_deb[k], a_deb[k]]) for k in ("m", "t", "points", "kind", "ref", "valid")}
    points_pending = np.bincount(f.m, weights=pending, minlength=n).round().astype(np.int64)
    clock.lap("points")
    ledger = run_ledger(credits, debits, n, T, cfg)
    clock.lap("ledger")

    # segments: value over the trailing window, lifecycle by recency
    vw = T - cfg.segments.value.window_days * DAY_US
    in_w = f.t >= vw
    refunded = np.zeros(len(f.m), dtype=np.int64)
    if len(op.ev_order):
        last = np.r_[op.ev_order[1:] != op.ev_order[:-1], True]
        refunded[op.ev_order[last]] = op.ev_refunded[last]
    net = np.where(in_w, f.cents - refunded, 0)
    spend_w = np.bincount(f.m, weights=net, minlength=n).astype(np.int64)
    alive = in_w & (f.void_t == np.iinfo(np.int64).max)
    orders_w = np.bincount(f.m[alive], minlength=n).astype(np.int64)
    unknown_w = np.bincount(f.m[in_w & ~f.known], minlength=n) > 0
    value = value_segment(spend_w, ~unknown_w, orders_w, cfg)
    last_order = np.full(n, NO_TIME, dtype=np.int64)
    first_order = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    np.maximum.at(last_order, f.m, f.t)
    np.minimum.at(first_order, f.m, f.t)
    cands = np.vstack([np.where(inp.joined == NO_TIME, np.iinfo(np.int64).max, inp.joined), first_order,
                       np.where(inp.first_event == NO_TIME, np.iinfo(np.int64).max, inp.first_event)])
    first_seen = cands.min(axis=0)
    first_seen = np.where(first_seen == np.iinfo(np.int64).max, NO_TIME, first_seen)
    life = lifecycle_segment(first_seen, last_order, T, cfg)

    names = [t.name for t in tiers] + [None]  # index -1 → None
    nxt = np.where(rank == UNKNOWN, -1, np.where(rank + 1 < len(tiers), rank + 1, -1))
    reason = _labels(np.where(rank == UNKNOWN, 0, -1),
                     ["spend unknown: orders without amounts (use an order-count ladder for this store)", None])
    ben = benefit_columns(rank, cfg)
    frame = pd.DataFrame({
        MEMBER_ID: pd.array(inp.member_ids.array, dtype="str"),  # the default string dtype, as before
        "tier": _labels(rank, names),
        "tier_rank": _ints(rank, rank == UNKNOWN),
        "tier_reason": reason,
        "next_tier": _labels(nxt, names),
        "spend_to_next_tier": gaps["spend_to_next_tier"],
        # not applicable (NA) for the top tier and unknown tiers
        "orders_to_next_tier": _ints(gaps["orders_to_next_tier"], nxt == -1),
        "interactions_to_next_tier": _ints(gaps["interactions_to_next_tier"], nxt == -1),
        "qualifying_spend": np.where(q_complete, q_cents / 100.0, np.nan),
        "qualifying_orders": q_orders,
        "points_balance": ledger.balance,
        "points_earned": ledger.earned,
        "points_redeemed": ledger.redeemed,
        "points_reversed": ledger.reversed,
        "points_expired": ledger.expired,
        "points_expiring_30d": ledger.expiring_soon,
        "points_pending": points_pending,
        "redemptions_rejected": ledger.rejected,
        "last_rejection_reason": pd.array(ledger.last_rejection, dtype="string"),
        **ben,
        "value_segment": pd.array(value, dtype="string"),
        "lifecycle_segment": pd.array(life, dtype="string"),
        "strategy": pd.array(strategy(value, cfg), dtype="string"),
        "spend_12m": np.where(unknown_w, np.nan, spend_w / 100.0),
        "orders_12m": orders_w,
        "last_order_at": from_us(last_order).to_numpy(),
        "days_since_last_order": np.where(last_order == NO_TIME, np.nan,
                                          (T - np.where(last_order == NO_TIME, T, last_order)) / DAY_US),
        "orphan_refunds": op.orphan_refunds,
        "birth_month": _ints(inp.birth_month, inp.birth_month == 0),
    }, copy=False)
    clock.lap("segments")
    return frame[list(STATE_COLUMNS)], ledger, clock.out


def member_state(orders: pd.DataFrame, events: pd.DataFrame | None, members: pd.DataFrame | None, as_of: object,
                 config: LoyaltyConfig | None = None) -> pd.DataFrame:
    """One row per member (every member in orders/events/members before `as_of`), sorted by member_id."""
    return evaluate(orders, events, members, as_of, config).frame


def event_types(config: LoyaltyConfig) -> set[str]:
    """Event types the rules read (activities, redemptions, tier interactions); others only make a member known."""
    return _event_types(config)


def category_bonus(config: LoyaltyConfig) -> dict[str, int]:
    """Category → flat bonus points per paid line (what an engine computes per line for `prepare_arrays`)."""
    return dict(config.points.category_bonus or {})
