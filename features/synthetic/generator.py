"""`generate()`: draw a whole synthetic store (members, orders, events, items) plus its ground truth."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from features.contract import ITEM_ID, MEMBER_ID, OCCURRED_AT, ORDER_ID, ORDERED_AT, SCHEMAS, conform
from features.synthetic.calendar import DEAL_EXPONENTS, PEAK_THRESHOLD, PERSONAS, day_range, promotion_factors, seasonal_weights
from features.synthetic.catalogue import CATEGORY_NAMES, Catalogue, id_strings, make_catalogue
from features.synthetic.events import EVENT_CODES, Events, simulate_events
from features.synthetic.orders import DAY, STATUS_CODES, OrderLines, expected_line_value, simulate_orders
from features.synthetic.population import CHANNELS, GENDER_CODES, REGIONS, Population, make_population

DEFAULT_START = "2024-01-01"
DEFAULT_END = "2025-12-31"
MEMBER_ID_WIDTH = 8
ORDER_ID_WIDTH = 10

_ARROW_TYPES = {"string": pa.string(), "datetime": pa.timestamp("us"), "float": pa.float64(), "int": pa.int64(),
                "bool": pa.bool_()}


def arrow_schema(table: str) -> pa.Schema:
    """The contract schema of `table` as an Arrow schema (what `conform` + Parquet produce)."""
    return pa.schema([pa.field(c.name, _ARROW_TYPES[c.dtype]) for c in SCHEMAS[table].columns])


@dataclass
class SyntheticData:
    """A generated store: clean contract tables (Arrow), ground truth, and with `messy` the raw tables + injections.

    tables: members / orders / events / items, exactly the contract columns and types.
    ground_truth: one row per member (latent parameters; see the package docstring).
    ground_truth_cycles: one row per replenished (member, consumable category).
    raw: with messy=True, the tables as written to disk (injected bad rows, some columns as strings).
    injections: table -> rule -> number of injected rows (empty unless messy).
    """

    tables: dict[str, pa.Table]
    ground_truth: pd.DataFrame
    ground_truth_cycles: pd.DataFrame
    meta: dict[str, Any]
    raw: dict[str, pa.Table] | None = None
    injections: dict[str, dict[str, int]] = field(default_factory=dict)

    def frame(self, table: str) -> pd.DataFrame:
        """A clean table as a pandas frame conformed to the contract (what `Store.read` returns)."""
        return conform(self.tables[table].to_pandas(), SCHEMAS[table])

    @property
    def members(self) -> pd.DataFrame:
        return self.frame("members")

    @property
    def orders(self) -> pd.DataFrame:
        return self.frame("orders")

    @property
    def events(self) -> pd.DataFrame:
        return self.frame("events")

    @property
    def items(self) -> pd.DataFrame:
        return self.frame("items")

    def injection_counts(self) -> dict[str, int]:
        """Injected rows per rule, summed over tables."""
        out: dict[str, int] = {}
        for rules in self.injections.values():
            for r, k in rules.items():
                out[r] = out.get(r, 0) + k
        return out


def _ts(start_us: int, sec: np.ndarray) -> pa.Array:
    return pa.array((start_us + sec.astype(np.int64) * 1_000_000).astype("datetime64[us]"))


def _names(names: tuple[str, ...] | list[str], codes: np.ndarray) -> pa.Array:
    return pa.array(list(names), pa.string()).take(pa.array(np.asarray(codes, dtype=np.int64)))


def _members_table(pop: Population, member_ids: pa.Array, start_us: int) -> pa.Table:
    join_sec = np.round(pop.join_t * DAY).astype(np.int64)
    birthday = (np.datetime64(start_us, "us").astype("datetime64[D]") + pop.birthday_day).astype("datetime64[us]")
    return pa.table({
        MEMBER_ID: member_ids,
        "joined_at": _ts(start_us, join_sec),
        "birthday": pa.array(birthday),
        "gender": _names(GENDER_CODES, pop.gender),
        "age": pa.array(pop.age.astype(np.float64)),
        "region": _names(list(REGIONS), pop.region),
        "channel": _names(list(CHANNELS), pop.channel),
        "marketing_consent": pa.array(pop.consent, pa.bool_()),
    }, schema=arrow_schema("members"))


def _orders_table(lines: OrderLines, member_ids: pa.Array, cat: Catalogue, start_us: int) -> pa.Table:
    """Orders with an int64 `order_no` (chunk-local) in place of order_id; see `_with_order_ids`."""
    return pa.table({
        "order_no": pa.array(lines.order_no),
        MEMBER_ID: member_ids.take(pa.array(lines.member)),
        ORDERED_AT: _ts(start_us, lines.sec),
        "amount": pa.array(lines.amount),
        ITEM_ID: cat.item_id.take(pa.array(lines.item)),
        "category": _names(CATEGORY_NAMES, lines.category),
        "quantity": pa.array(lines.quantity),
        "discount": pa.array(lines.discount),
        "coupon_used": pa.array(lines.coupon, pa.bool_()),
        "status": _names(STATUS_CODES, lines.status),
    })


def _with_order_ids(orders: pa.Table, offset: int) -> pa.Table:
    """Replace the chunk-local `order_no` column by order_id = O + 10 digits of (offset + order_no + 1)."""
    ids = id_strings("O", orders.column("order_no").to_numpy() + offset + 1, ORDER_ID_WIDTH)
    return orders.set_column(0, pa.field(ORDER_ID, pa.string()), ids).cast(arrow_schema("orders"))


def _events_table(ev: Events, member_ids: pa.Array, cat: Catalogue, start_us: int) -> pa.Table:
    item_idx = pa.array(ev.item, mask=ev.item < 0)
    return pa.table({
        MEMBER_ID: member_ids.take(pa.array(ev.member)),
        OCCURRED_AT: _ts(start_us, ev.sec),
        "type": _names(EVENT_CODES, ev.type),
        ITEM_ID: cat.item_id.take(item_idx),
        "value": pa.array(ev.value, from_pandas=True),
    }, schema=arrow_schema("events"))


def _ground_truth(pop: Population, cat: Catalogue, lines: OrderLines, member_ids: pa.Array, start_us: int,
                  cum_seasonal: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    start = pd.Timestamp(np.datetime64(start_us, "us"))
    n_days = pop.n_days
    dropout = np.where(np.isfinite(pop.dropout_t) & (pop.dropout_t < n_days), pop.dropout_t, np.nan)
    mass = cum_seasonal[pop.deal_group, pop.active_to] - cum_seasonal[pop.deal_group, pop.active_from]
    gt: dict[str, Any] = {
        MEMBER_ID: pd.array(member_ids, dtype="string"),
        "persona": pd.Categorical.from_codes(pop.persona, categories=list(PERSONAS)).astype("string"),
        "deal_exponent": DEAL_EXPONENTS[pop.deal_group],
        "purchase_rate": pop.rate,
        "churn_hazard": pop.hazard,
        "is_loyal": pop.hazard == 0,
        "joined_at": start + pd.to_timedelta(np.round(pop.join_t * DAY), unit="s"),
        "active_from": start + pd.to_timedelta(pop.active_from, unit="D"),
        "active_to": start + pd.to_timedelta(pop.active_to, unit="D"),
        "dropout_at": start + pd.to_timedelta(np.round(dropout * DAY), unit="s"),
        "expected_base_orders": pop.rate * mass,
        "spend_level": pop.spend_z,
        "expected_line_value": expected_line_value(pop, cat),
        "basket_extra_lines": pop.basket,
        "engagement": pop.engagement,
        "taste_cluster": pop.cluster,
        "coupon_propensity": pop.coupon_prop,
        "refund_propensity": pop.refund_prop,
        "review_propensity": pop.review_prop,
        "checkin_habit": pop.checkin_habit,
    }
    for ci, name in enumerate(CATEGORY_NAMES):
        gt[f"affinity_{name}"] = pop.affinity[:, ci]
    gt_df = pd.DataFrame(gt)
    for c in ("joined_at", "active_from", "active_to", "dropout_at"):
        gt_df[c] = gt_df[c].astype("datetime64[us]")

    cy = lines.cycles
    cycles = pd.DataFrame({
        MEMBER_ID: pd.array(member_ids.take(pa.array(cy.member)), dtype="string"),
        "category": pd.array(np.array(CATEGORY_NAMES, dtype=object)[cy.category], dtype="string"),
        "cycle_days": cy.cycle_days,
        "staple_item_id": pd.array(cat.item_id.take(pa.array(cy.staple)), dtype="string"),
        "first_purchase_at": (start + pd.to_timedelta(np.round(cy.first_t * DAY), unit="s")).astype("datetime64[us]"),
        "purchases_in_window": cy.purchases.astype(np.int64),
    })
    return gt_df, cycles


CHUNK_MEMBERS = 50_000  # members per chunk: chunks are independent draws (own seed), run in parallel processes


@dataclass(frozen=True)
class ChunkSpec:
    """One block of members: numbers first_member+1 .. first_member+n_members, drawn from its own seed."""

    index: int
    first_member: int
    n_members: int
    seed: int
    start: str
    end: str


@dataclass
class ChunkResult:
    spec: ChunkSpec
    tables: dict[str, pa.Table]   # members, orders (with chunk-local order_no), events
    ground_truth: pd.DataFrame
    cycles: pd.DataFrame
    n_orders: int
    base_orders: int
    replenishment_orders: int


def _calendar(start: str, end: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    days = day_range(start, end)
    weights = [seasonal_weights(days, e) for e in DEAL_EXPONENTS]
    cum_seasonal = np.stack([np.r_[0.0, np.cumsum(w)] for w in weights])
    peak_day = promotion_factors(days) >= PEAK_THRESHOLD
    start_us = int(days[0].astype("datetime64[us]").astype(np.int64))
    return days, cum_seasonal, peak_day, start_us


def run_chunk(spec: ChunkSpec, cat: Catalogue) -> ChunkResult:
    """Draw one chunk of members with all their orders and events (a pure function of spec and catalogue)."""
    days, cum_seasonal, peak_day, start_us = _calendar(spec.start, spec.end)
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 1, spec.index]))
    pop = make_population(rng, spec.n_members, len(days), np.diff(cum_seasonal[1]))
    member_ids = id_strings("M", np.arange(spec.first_member + 1, spec.first_member + spec.n_members + 1),
                            MEMBER_ID_WIDTH)
    lines = simulate_orders(rng, pop, cat, cum_seasonal, peak_day)
    ev = simulate_events(rng, pop, cat, lines, cum_seasonal)
    gt, cycles = _ground_truth(pop, cat, lines, member_ids, start_us, cum_seasonal)
    return ChunkResult(
        spec=spec,
        tables={
            "members": _members_table(pop, member_ids, start_us),
            "orders": _orders_table(lines, member_ids, cat, start_us),
            "events": _events_table(ev, member_ids, cat, start_us),
        },
        ground_truth=gt, cycles=cycles, n_orders=int(lines.base_orders + lines.replenishment_orders),
        base_orders=int(lines.base_orders), replenishment_orders=int(lines.replenishment_orders),
    )


def chunk_specs(n_members: int, seed: int, start: str, end: str, chunk_members: int = CHUNK_MEMBERS) -> list[ChunkSpec]:
    if n_members < 1:
        raise ValueError(f"n_members must be >= 1 (got {n_members})")
    if chunk_members < 1:
        raise ValueError(f"chunk_members must be >= 1 (got {chunk_members})")
    day_range(start, end)  # validates the dates
    return [ChunkSpec(i, f, min(chunk_members, n_members - f), int(seed), str(start), str(end))
            for i, f in enumerate(range(0, n_members, chunk_members))]


def catalogue_for(n_members: int, seed: int) -> Catalogue:
    return make_catalogue(np.random.default_rng(np.random.SeedSequence([int(seed), 0])), n_members)


def iter_chunks(specs: list[ChunkSpec], cat: Catalogue, workers: int = 1) -> Iterator[ChunkResult]:
    """Run the chunks (in `workers` processes when > 1), yielding results in chunk order with global order ids."""
    offset = 0

    def finish(res: ChunkResult) -> ChunkResult:
        nonlocal offset
        res.tables["orders"] = _with_order_ids(res.tables["orders"], offset)
        offset += res.n_orders
        return res

    workers = max(1, min(int(workers), len(specs)))
    if workers == 1:
        for spec in specs:
            yield finish(run_chunk(spec, cat))
        return
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers, mp_context=_mp_context()) as pool:
        futures = [pool.submit(run_chunk, spec, cat) for spec in specs[:workers + 1]]
        nxt = len(futures)
        for i in range(len(specs)):
            res = futures[i].result()
            futures[i] = None  # type: ignore[call-overload]  # free the finished chunk
            if nxt < len(specs):
                futures.append(pool.submit(run_chunk, specs[nxt], cat))
                nxt += 1
            yield finish(res)


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 4))


def generate(
    n_members: int,
    seed: int,
    *,
    start: str = DEFAULT_START,
    end: str = DEFAULT_END,
    messy: bool = False,
    workers: int | None = None,
    chunk_members: int = CHUNK_MEMBERS,
    on_chunk: Callable[[int, int], None] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> SyntheticData:
    """Generate a synthetic store of `n_members` members active from `start` to `end` (inclusive days), in memory.

    Deterministic given (n_members, seed, start, end, chunk_members): `workers` (default: `default_workers()`) changes
    the speed, never the data. `on_chunk(done, total)` / `on_step(message)` report progress. With `messy`, `raw` holds
    the tables with known bad rows per rule.
    For stores too big for memory use `generate_to_store` (streams chunks to Parquet).
    """
    specs = chunk_specs(n_members, seed, start, end, chunk_members)
    cat = catalogue_for(n_members, seed)
    parts: list[ChunkResult] = []
    for res in iter_chunks(specs, cat, default_workers() if workers is None else workers):
        parts.append(res)
        if on_chunk:
            on_chunk(len(parts), len(specs))
        if on_step:
            on_step(f"members chunk {len(parts)}/{len(specs)}")
    tables = {t: pa.concat_tables([p.tables[t] for p in parts]).combine_chunks() for t in ("members", "orders", "events")}
    tables["items"] = cat.table()
    meta = _meta(n_members, seed, specs, parts, {t: tab.num_rows for t, tab in tables.items()}, messy, chunk_members)
    data = SyntheticData(
        tables=tables,
        ground_truth=pd.concat([p.ground_truth for p in parts], ignore_index=True),
        ground_truth_cycles=pd.concat([p.cycles for p in parts], ignore_index=True),
        meta=meta,
    )
    if messy:
        from features.synthetic.messy import inject

        if on_step:
            on_step("messy rows")
        data.raw, data.injections = inject(tables, np.random.default_rng(np.random.SeedSequence([int(seed), 2])))
    return data


def _meta(n_members: int, seed: int, specs: list[ChunkSpec], parts: list[ChunkResult], rows: dict[str, int],
          messy: bool, chunk_members: int) -> dict[str, Any]:
    return {
        "generator": "features.synthetic",
        "n_members": int(n_members),
        "seed": int(seed),
        "start": specs[0].start,
        "end": specs[0].end,
        "messy": bool(messy),
        "chunk_members": int(chunk_members),
        "rows": rows,
        "base_orders": int(sum(p.base_orders for p in parts)),
        "replenishment_orders": int(sum(p.replenishment_orders for p in parts)),
    }


def _mp_context() -> Any:
    """fork where available (no re-import of the caller's __main__, cheap start), else spawn."""
    import multiprocessing as mp

    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
