"""Batch scoring (DESIGN §8): every member of a store scored by the champion models and the loyalty rules.

`score_store(store, as_of, out, models)` writes a folder with `scores.parquet` (or `.csv`), `replenishment.parquet`
(member × category reminders) and `manifest.json`. How it stays within bounded memory whatever the store size:

1. **Partition** (one DuckDB pass, out-of-core): the rows strictly before `as_of` of every member table are written
   into `k` buckets by a hash of member_id (`k` = members ÷ chunk size), so a member's whole history lands in one
   bucket and each bucket is a small store of its own (the items table is shared).
2. **Per bucket** (one chunk of members in memory at a time): the feature definitions and the loyalty ledger
   (`features.pipeline.compute_features_and_loyalty`: the same definitions the online table is materialized with),
   the recent items the recommender reads, the member's activity hours and profile status; then the four champion
   models through `serving.compose`, the functions behind the online /score answer, so a member's batch row and
   the /score answer agree (tested); the timing champion's replenishment estimator gives the categories due.
3. **Write**: each chunk is appended to a Parquet (or CSV) writer inside a temporary folder beside `out`; only when
   every chunk is written is the folder renamed to `out`. An interrupted run leaves no partial output.

On big stores the chunks are scored by `workers` processes (spawned, one thread each; each loads the exact model
versions the parent resolved, once; started before the partitioning so their start-up overlaps it), at most two
chunks in flight per worker. A worker hands back its chunk as Arrow tables (list columns included: the
recommendation lists are built as Arrow arrays, never as a million Python lists), which cost little to send; the
parent only appends them in chunk order. Memory is bounded by (workers × 2) chunks whatever the store size
(benchmarks/results/batch.json). The manifest records wall seconds and CPU seconds per stage (summed over the
processes), so a run on a busy machine still says where the work goes.

Every feature is a function of the member's own rows, so scoring by bucket gives exactly the whole-store values.
The replenishment estimator also needs the whole store's category statistics (each member's cycle is shrunk toward
its category's median cycle; "regular" categories are detected from all the pairs): a first pass over the buckets
computes each bucket's member × category cycles (kept beside the bucket) and their small mergeable per-category
counts; the store's category medians come from the summed counts, and each bucket's reminders are then finished with
them. So the reminders do not depend on the chunk size (tested), and Spark computes the same ones.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from features.contract import MEMBER_ID, SCHEMAS
from features.store import Store
from serving.compose import RECS_LISTS, churn_columns, ltv_columns, recommend_frame, recs_arrays, timing_columns
from serving.models import ModelSet

log = logging.getLogger("member_ml.serving.batch")

SCORES = "scores"
REPLENISHMENT = "replenishment.parquet"
CHUNK_PAIRS = "_replenishment_pairs.parquet"  # a bucket's member × category cycles, from the first pass
MANIFEST = "manifest.json"
MODEL_NAMES = ("churn", "ltv", "timing", "recs")
AUTO_WORKERS_MEMBERS = 200_000  # from this many members on, chunks are scored in parallel processes by default

#: loyalty state columns carried into the scores (loyalty.batch.STATE_COLUMNS minus bookkeeping ones)
LOYALTY_COLUMNS = (
    "tier", "tier_rank", "next_tier", "spend_to_next_tier", "qualifying_spend", "points_balance",
    "points_expiring_30d", "discount_rate", "points_multiplier", "priority_shipping", "dedicated_service",
    "birthday_gift", "member_day", "value_segment", "lifecycle_segment", "strategy", "spend_12m", "orders_12m",
    "days_since_last_order",
)
#: features the campaign rules read (consent, birthday, tenure, activity)
FEATURE_COLUMNS = ("marketing_consent", "days_to_birthday", "tenure_days", "recency_days", "orders_lifetime",
                   "spend_lifetime", "preferred_hour", "top_category")


class BatchError(ValueError):
    """Batch scoring cannot run as asked (missing model, bad option, unusable store): the message says why."""


@dataclass
class Timings:
    """Seconds spent in each stage (features includes partitioning and reading; models includes replenishment).

    Wall seconds (`partition`, `features`, `models`, `writing`, `stages`) and this process's CPU seconds per stage
    (`cpu`): on a shared machine the wall seconds also hold the waiting for a core, the CPU seconds do not.
    """

    partition: float = 0.0
    features: float = 0.0
    models: float = 0.0
    writing: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, seconds: float) -> None:
        self.stages[stage] = self.stages.get(stage, 0.0) + seconds

    def add_cpu(self, stage: str, seconds: float) -> None:
        self.cpu[stage] = self.cpu.get(stage, 0.0) + seconds

    @contextmanager
    def stage(self, name: str, *, wall: bool = True) -> Iterator[None]:
        """Count the block's wall seconds (in `stages`, when `wall`) and CPU seconds (in `cpu`) under `name`."""
        t, c = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            if wall:
                self.add(name, time.perf_counter() - t)
            self.add_cpu(name, time.process_time() - c)

    def merge(self, other: "Timings") -> None:
        self.features += other.features
        self.models += other.models
        self.writing += other.writing
        for k, v in other.stages.items():
            self.add(k, v)
        for k, v in other.cpu.items():
            self.add_cpu(k, v)


# ------------------------------------------------------------------------------------------------- partitioning

def _sql_path(p: Path) -> str:
    return os.fspath(p).replace("'", "''")


def count_members(store: Store, as_of: pd.Timestamp) -> int:
    """Members known before `as_of` (sizes the chunks): the members table's rows joined before `as_of` (a cheap
    count of one column); without a members table, the distinct member_ids of the orders and events (approximate)."""
    import duckdb

    lit = f"TIMESTAMP '{as_of.isoformat(sep=' ')}'"
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
        if store.has("members"):
            n = con.execute(f"SELECT COUNT(*) FROM read_parquet('{_sql_path(store.table_path('members'))}') "
                            f"WHERE joined_at < {lit} OR joined_at IS NULL").fetchone()[0]
            if n:
                return int(n)
        best = 0
        for table, tcol in (("orders", "ordered_at"), ("events", "occurred_at")):
            if not store.has(table):
                continue
            n = con.execute(f"SELECT approx_count_distinct(member_id) FROM read_parquet('"
                            f"{_sql_path(store.table_path(table))}') WHERE {tcol} < {lit}").fetchone()[0]
            best = max(best, int(n or 0))
        return best
    finally:
        con.close()


def partition_store(store: Store, as_of: pd.Timestamp, buckets: int, work: Path,
                    memory_limit: str | None = None) -> list[Store]:
    """Write the rows before `as_of` of each member table into `buckets` stores under `work` (by member hash).

    Only the contract columns are kept; the items table is linked into every bucket. Buckets without any row are
    left out.
    """
    import duckdb

    lit = f"TIMESTAMP '{as_of.isoformat(sep=' ')}'"
    time_filter = {"orders": f"ordered_at < {lit}", "events": f"occurred_at < {lit}",
                   "members": f"(joined_at < {lit} OR joined_at IS NULL)"}
    con = duckdb.connect()
    try:
        con.execute(f"SET memory_limit = '{memory_limit or os.environ.get('MEMBER_ML_DUCKDB_MEMORY', '4GB')}'")
        con.execute(f"SET temp_directory = '{_sql_path(work / 'duckdb_tmp')}'")
        con.execute("SET preserve_insertion_order = false")
        con.execute("SET enable_progress_bar = false")
        for table, where in time_filter.items():
            if not store.has(table):
                continue
            src = f"read_parquet('{_sql_path(store.table_path(table))}')"
            have = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
            cols = ", ".join(f'"{c}"' for c in SCHEMAS[table].names if c in have)
            con.execute(f"COPY (SELECT {cols}, CAST(hash(member_id) % {int(buckets)} AS INTEGER) AS bucket "
                        f"FROM {src} WHERE {where}) TO '{_sql_path(work / table)}' "
                        "(FORMAT parquet, PARTITION_BY (bucket), OVERWRITE_OR_IGNORE, COMPRESSION lz4_raw)")
    finally:
        con.close()
    out = []
    for b in range(buckets):
        folder = work / f"chunk_{b:05d}"
        for table in ("orders", "events", "members"):
            files = sorted((work / table / f"bucket={b}").glob("*.parquet"))
            if len(files) > 1:
                raise BatchError(f"partition of {table} bucket {b} came out as {len(files)} files; expected one")
            if files:
                folder.mkdir(parents=True, exist_ok=True)
                os.replace(files[0], folder / f"{table}.parquet")
        if not (folder / "orders.parquet").exists():
            if folder.exists():  # members or events only, no order line before as_of: still members to score
                _empty_orders(folder / "orders.parquet")
            else:
                continue
        if store.has("items"):
            os.symlink(store.table_path("items").resolve(), folder / "items.parquet")
        out.append(Store(folder))
    return out


def _empty_orders(path: Path) -> None:
    from features.contract import ORDERS, conform

    conform(pd.DataFrame(columns=ORDERS.names), ORDERS).to_parquet(path, index=False)


# --------------------------------------------------------------------------------------------- one chunk

def activity_sql(orders: str, events: str | None, as_of: pd.Timestamp, window_days: int = 365) -> str:
    """The DuckDB SQL behind `activity()`, over the table references `orders` and `events` (None: no events table),
    so that batch scoring on Spark runs the same query (transpiled by sqlglot) instead of a second copy."""
    lit = f"TIMESTAMP '{as_of.isoformat(sep=' ')}'"
    since = f"{lit} - INTERVAL {int(window_days)} DAY"
    parts = [f"SELECT member_id, ordered_at AS t FROM {orders} WHERE ordered_at < {lit} AND ordered_at >= {since}"]
    if events is not None:
        parts.append(f"SELECT member_id, occurred_at AS t FROM {events} "
                     f"WHERE occurred_at < {lit} AND occurred_at >= {since}")
    sql = f"""
        WITH acts AS ({' UNION ALL '.join(parts)}),
        hours AS (SELECT member_id, hour(t) AS h, COUNT(*) AS n FROM acts GROUP BY ALL)
        -- the most frequent hour, the earliest among ties
        SELECT member_id, CAST(arg_max(h, n * 24 + (23 - h)) AS DOUBLE) AS active_hour,
               CAST(SUM(n) AS DOUBLE) AS active_actions
        FROM hours GROUP BY member_id"""
    if events is not None:  # one pass: the hours and whether the profile was ever completed
        sql = f"""
            WITH act AS ({sql}),
            prof AS (SELECT DISTINCT member_id FROM {events} WHERE type = 'profile_completed' AND occurred_at < {lit})
            SELECT COALESCE(act.member_id, prof.member_id) AS member_id, act.active_hour,
                   COALESCE(act.active_actions, 0.0) AS active_actions, prof.member_id IS NOT NULL AS profile_completed
            FROM act FULL OUTER JOIN prof ON act.member_id = prof.member_id"""
    return sql


def activity(store: Store, as_of: pd.Timestamp, window_days: int = 365) -> pd.DataFrame:
    """Per member: the hour of day they are most active (orders and events in the last `window_days`), how many
    timestamped actions that is from, and whether they ever completed their profile (a profile_completed event)."""
    import duckdb

    ev = f"read_parquet('{_sql_path(store.table_path('events'))}')" if store.has("events") else None
    sql = activity_sql(f"read_parquet('{_sql_path(store.table_path('orders'))}')", ev, as_of, window_days)
    con = duckdb.connect()
    try:
        con.execute("SET threads = 1")
        con.execute("SET enable_progress_bar = false")
        out = con.execute(sql).df()
    finally:
        con.close()
    out[MEMBER_ID] = out[MEMBER_ID].astype("string")
    out["active_hour"] = out["active_hour"].astype("float64")
    out["active_actions"] = out["active_actions"].astype("float64")
    # without an events table nobody can be known to have completed a profile: unknown, not "no"
    out["profile_completed"] = (out["profile_completed"].astype("boolean") if ev is not None
                                else pd.array([pd.NA] * len(out), dtype="boolean"))
    return out


def _chunk_orders(store: Store) -> pd.DataFrame:
    cols = [c for c in (MEMBER_ID, "ordered_at", "category", "item_id", "status")]
    return pd.read_parquet(store.table_path("orders"), columns=cols)


def splits_replenishment(model: Any) -> bool:
    """Whether the timing model has the estimator in parts (models logged before that estimate per chunk)."""
    return all(hasattr(model, a) for a in ("replenishment_pairs", "replenishment_counts", "replenishment_categories",
                                           "replenishment_finish"))


def chunk_replenishment_counts(model: Any, store: Store, as_of: pd.Timestamp,
                               items: pd.DataFrame | None) -> pd.DataFrame:
    """First pass over one bucket: its member × category cycles (written beside it, `CHUNK_PAIRS`, for
    `replenishment_due`) and their mergeable per-category counts (returned)."""
    pairs = model.replenishment_pairs(_chunk_orders(store), as_of, items=items)
    pairs.to_parquet(Path(store.path) / CHUNK_PAIRS, index=False)
    return model.replenishment_counts(pairs)


def replenishment_due(model: Any, store: Store, as_of: pd.Timestamp, items: pd.DataFrame | None,
                      categories: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The timing champion's replenishment cycles for the chunk: (reminder pairs, per-member soonest due).
    With the store's `categories` (category stats), the bucket's cycles of the first pass are finished with them."""
    estimate = getattr(model, "replenishment", None)
    empty = pd.DataFrame({MEMBER_ID: pd.Series([], dtype="string")})
    if estimate is None:
        return pd.DataFrame(), empty
    cached = Path(store.path) / CHUNK_PAIRS
    if categories is not None and cached.exists():
        cycles = model.replenishment_finish(pd.read_parquet(cached), categories, as_of, items=items)
    elif categories is not None:
        cycles = estimate(_chunk_orders(store), as_of, items=items, categories=categories)
    else:
        cycles = estimate(_chunk_orders(store), as_of, items=items)
    pairs = cycles[cycles["reminder"].astype(bool)].reset_index(drop=True)
    return pairs, due_summary(pairs)


def due_summary(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per member of the reminder `pairs`, the soonest reminder due from 7 days ago on: member_id,
    next_due_category, next_due_at, days_until_due, due_cycle_days (ties by category)."""
    upcoming = pairs[pairs["days_until_due"] >= -7].sort_values(["days_until_due", "category"], kind="mergesort")
    first = upcoming.drop_duplicates(MEMBER_ID)
    summary = pd.DataFrame({
        MEMBER_ID: first[MEMBER_ID].astype("string").to_numpy(),
        "next_due_category": first["category"].astype("string").to_numpy(),
        "next_due_at": first["due_at"].astype("datetime64[us]").to_numpy(),
        "days_until_due": first["days_until_due"].astype("float64").to_numpy(),
        "due_cycle_days": first["due_cycle_days"].astype("float64").to_numpy(),
    })
    return summary


def score_chunk(chunk: Store, as_of: pd.Timestamp, models: ModelSet, *, top_n: int = 10, top_reasons: int = 3,
                items: pd.DataFrame | None = None, timings: Timings | None = None,
                categories: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score every member of one (small) store: (one row per member, replenishment reminder pairs); `categories`
    = the whole store's replenishment category stats (None: the chunk's own).

    The recommendation lists come as Arrow list columns (built without per-member Python lists); the churn reasons
    as Python lists. Both write to the same Parquet list columns."""
    from features.engine import DuckDBEngine
    from features.pipeline import compute_features_and_loyalty, compute_recent_items

    tm = timings or Timings()
    t0 = time.perf_counter()
    with DuckDBEngine(threads=int(os.environ.get("MEMBER_ML_DUCKDB_THREADS", "0")) or None) as eng:
        with tm.stage("features_sql_and_loyalty"):
            feats, state = compute_features_and_loyalty(chunk, as_of, engine=eng)
        with tm.stage("recent_items"):
            recent = compute_recent_items(chunk, as_of, engine=eng) if models.get("recs") else None
    with tm.stage("activity"):
        act = activity(chunk, as_of)
    with tm.stage("assemble"):
        ids = feats[MEMBER_ID].astype("string")
        out = pd.DataFrame({MEMBER_ID: ids.to_numpy(), "as_of": pd.Series(as_of, index=feats.index)
                            .astype("datetime64[us]").to_numpy()})
        if state is not None:
            st = state.set_index(state[MEMBER_ID].astype("string"))
            cols = [c for c in LOYALTY_COLUMNS if c in st.columns]
            sub = st[cols].reindex(ids.to_numpy()).reset_index(drop=True)  # one lookup for all the columns
            for c in cols:
                out[c] = sub[c]
        for c in FEATURE_COLUMNS:
            if c in feats.columns:
                out[c] = feats[c].to_numpy()
        a = act.set_index(MEMBER_ID).reindex(ids.to_numpy())
        out["active_hour"] = a["active_hour"].to_numpy(dtype="float64")
        out["active_actions"] = a["active_actions"].fillna(0.0).to_numpy(dtype="float64")
        # a member absent from `act` has no recent action and no profile_completed event: known "no" when the
        # store has events, unknown without an events table
        out["profile_completed"] = (a["profile_completed"].astype("boolean").fillna(False).to_numpy()
                                    if chunk.has("events") else pd.array([pd.NA] * len(out), dtype="boolean"))
    t1 = time.perf_counter()
    tm.features += t1 - t0

    if (m := models.get("churn")) is not None:
        with tm.stage("churn"):
            out = _join(out, churn_columns(m.python_model, feats, top_reasons))
    if (m := models.get("ltv")) is not None:
        with tm.stage("ltv"):
            out = _join(out, ltv_columns(m.python_model, feats))
    if "churn_probability" in out.columns and "ltv" in out.columns:
        out["value_at_risk"] = out["churn_probability"] * out["ltv"]
    pairs = pd.DataFrame()
    if (m := models.get("timing")) is not None:
        with tm.stage("timing"):
            out = _join(out, timing_columns(m.python_model, feats, as_of))
        with tm.stage("replenishment"):
            pairs, due = replenishment_due(m.python_model, chunk, as_of, items, categories)
            out = _join(out, due)
    if (m := models.get("recs")) is not None:
        member_ids = ids.tolist()
        with tm.stage("recs"):
            ranked = recommend_frame(m.python_model, recent, member_ids, top_n, as_of)
        with tm.stage("recs_lists"):
            # `out` rows are in `ids` order (every join above is a left join on it): the lists align by position
            for c, arr in recs_arrays(ranked, member_ids, top_n).items():
                out[c] = pd.arrays.ArrowExtensionArray(arr)
    tm.models += time.perf_counter() - t1
    return out, pairs


def _join(left: pd.DataFrame, right: pd.DataFrame) -> pd.DataFrame:
    r = right.drop_duplicates(MEMBER_ID).set_index(MEMBER_ID)
    r.index = r.index.astype("string")
    return left.join(r, on=MEMBER_ID)


# ------------------------------------------------------------------------------------------- worker processes

_WORKER: dict[str, Any] = {}


def _init_worker(pins: dict[str, str], tracking_uri: str | None, items: pd.DataFrame | None) -> None:
    """Load the parent's exact model versions once per worker process (one thread each: the workers are the
    parallelism); the items table comes once here, not with every chunk."""
    import mlflow

    from serving.models import LoadedModel

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    ms = ModelSet()
    for name, version in pins.items():
        loaded = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
        ms.loaded[name] = LoadedModel(name, version, None, loaded.unwrap_python_model())
    _WORKER["models"] = ms
    _WORKER["items"] = items


def _ready() -> int:
    return os.getpid()


def _counts_in_worker(path: str, as_of: pd.Timestamp) -> tuple[pd.DataFrame, Timings]:
    """`chunk_replenishment_counts` of one chunk in a worker."""
    tm = Timings()
    t = time.perf_counter()
    with tm.stage("replenishment"):
        counts = chunk_replenishment_counts(_WORKER["models"].get("timing").python_model, Store(path), as_of,
                                            _WORKER["items"])
    tm.models += time.perf_counter() - t
    return counts, tm


def replenishment_categories(chunks: list[Store], as_of: pd.Timestamp, model: Any, items: pd.DataFrame | None,
                             pool: Any, timings: Timings) -> pd.DataFrame:
    """First pass: every bucket's cycles (kept beside it) → summed counts → the store's category stats."""
    if pool is None:
        counts = []
        for chunk in chunks:
            t = time.perf_counter()
            with timings.stage("replenishment"):
                counts.append(chunk_replenishment_counts(model, chunk, as_of, items))
            timings.models += time.perf_counter() - t
    else:
        counts = []
        for c, tm in pool.map(_counts_in_worker, [str(ch.path) for ch in chunks], [as_of] * len(chunks)):
            counts.append(c)
            timings.merge(tm)
    return model.replenishment_categories(pd.concat(counts, ignore_index=True))


def _score_in_worker(path: str, as_of: pd.Timestamp, top_n: int, top_reasons: int,
                     fmt: Literal["parquet", "csv"],
                     categories: pd.DataFrame | None = None) -> tuple[Any, Any, Timings]:
    """Score one chunk in a worker and hand back Arrow tables (ready to write; cheap to send between processes,
    unlike DataFrames of Python lists), so the parent only appends them to the output files."""
    tm = Timings()
    rows, pairs = score_chunk(Store(path), as_of, _WORKER["models"], top_n=top_n, top_reasons=top_reasons,
                              items=_WORKER["items"], timings=tm, categories=categories)
    shutil.rmtree(path, ignore_errors=True)
    t = time.perf_counter()
    with tm.stage("to_arrow"):
        rows_t = to_table(rows, fmt)
        pairs_t = to_table(pairs, "parquet") if len(pairs) else None
    tm.writing += time.perf_counter() - t
    return rows_t, pairs_t, tm


def start_pool(workers: int, models: ModelSet, tracking_uri: str | None, items: pd.DataFrame | None) -> Any:
    """`workers` spawned processes, each loading the very model versions in `models` (one thread each), started
    now so their start-up (imports, model loading) overlaps the partitioning in the parent."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    pins = {n: m.version for n, m in models.loaded.items()}
    env = {"OMP_NUM_THREADS": "1", "MEMBER_ML_DUCKDB_THREADS": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # inherited by the spawned workers (read when lightgbm / duckdb start there)
    try:
        pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                   initargs=(pins, tracking_uri, items))
        for _ in range(workers):  # a process is spawned per submit while none is idle: all start now
            pool.submit(_ready)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return pool


def _scored_chunks(chunks: list[Store], as_of: pd.Timestamp, models: ModelSet, pool: Any, workers: int, *,
                   top_n: int, top_reasons: int, items: pd.DataFrame | None, fmt: Literal["parquet", "csv"],
                   timings: Timings, categories: pd.DataFrame | None = None):  # noqa: ANN202 - a generator of
    # (rows, pairs, worker timings or None)
    """Score the chunks in order: in this process without a `pool` (rows and pairs as DataFrames), else in the
    pool's processes (as Arrow tables; at most two chunks in flight per worker, so memory stays bounded)."""
    if pool is None:
        for chunk in chunks:
            rows, pairs = score_chunk(chunk, as_of, models, top_n=top_n, top_reasons=top_reasons, items=items,
                                      timings=timings, categories=categories)
            shutil.rmtree(chunk.path, ignore_errors=True)
            yield rows, pairs, None
        return
    from collections import deque

    pending: deque = deque()
    todo = iter(chunks)
    for chunk in todo:
        pending.append(pool.submit(_score_in_worker, str(chunk.path), as_of, top_n, top_reasons, fmt, categories))
        if len(pending) >= 2 * workers:
            break
    while pending:
        rows, pairs, tm = pending.popleft().result()
        nxt = next(todo, None)
        if nxt is not None:
            pending.append(pool.submit(_score_in_worker, str(nxt.path), as_of, top_n, top_reasons, fmt,
                                       categories))
        yield rows, pairs, tm


# ---------------------------------------------------------------------------------------------------- writing

def to_table(df: pd.DataFrame, fmt: Literal["parquet", "csv"]) -> Any:
    """A scored chunk as an Arrow table; for CSV the list columns become "|"-joined text (vectorised)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = pa.Table.from_pandas(df, preserve_index=False)
    if fmt == "csv":
        for c in RECS_LISTS + ("churn_reasons",):
            if c in table.column_names:
                text = pc.binary_join(pc.cast(table[c], pa.list_(pa.string())), "|")
                table = table.set_column(table.column_names.index(c), c, pc.fill_null(text, ""))
    return table


class ChunkWriter:
    """Append DataFrames (or Arrow tables from `to_table`) to one Parquet or CSV file with a schema fixed by the
    first chunk (nulls typed sensibly)."""

    def __init__(self, path: Path, fmt: Literal["parquet", "csv"]) -> None:
        self.path = path
        self.fmt = fmt
        self.schema: Any = None
        self._writer: Any = None
        self.rows = 0

    def _fix_schema(self, schema: Any) -> Any:
        import pyarrow as pa

        fields = []
        for f in schema:
            t = f.type
            if pa.types.is_null(t):
                t = pa.timestamp("us") if f.name.endswith(("_at", "_date")) else (
                    pa.list_(pa.string()) if f.name in RECS_LISTS else pa.string())
            elif pa.types.is_list(t) and pa.types.is_null(t.value_type):
                t = pa.list_(pa.float64() if f.name == "rec_scores" else pa.string())
            fields.append(pa.field(f.name, t))
        return pa.schema(fields)

    def write(self, data: Any) -> None:
        """Append a DataFrame or an Arrow table made by `to_table` for this writer's format."""
        table = data if not isinstance(data, pd.DataFrame) else to_table(data, self.fmt)
        if self.schema is None:
            self.schema = self._fix_schema(table.schema).remove_metadata()
            if self.fmt == "parquet":
                import pyarrow.parquet as pq

                self._writer = pq.ParquetWriter(self.path, self.schema, compression="snappy")
            else:
                import pyarrow.csv as pcsv

                self._writer = pcsv.CSVWriter(self.path, self.schema)
        table = table.select(self.schema.names).cast(self.schema)
        self._writer.write_table(table) if self.fmt == "parquet" else self._writer.write(table)
        self.rows += table.num_rows

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


# ------------------------------------------------------------------------------------------------- the whole run

def replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished temporary folder to `out` (an existing `out` is replaced only after success)."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def score_store(store: Store, as_of: object, out: Path, models: ModelSet, *, fmt: Literal["parquet", "csv"] = "parquet",
                chunk_size: int = 50_000, top_n: int = 10, top_reasons: int = 3, workers: int | None = None,
                tracking_uri: str | None = None,
                progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Score every member of `store` as of `as_of` into the folder `out` (replaced atomically); returns the
    manifest (also written as `out/manifest.json`).

    `workers` > 1 scores chunks in that many processes (each loads the very model versions in `models` once, from
    the registry at `tracking_uri`); the default is one per CPU core (at most 2) from `AUTO_WORKERS_MEMBERS`
    members on, else 1.
    """
    from features.engine import as_timestamp
    from features.pipeline import FEATURE_VERSION
    from features.training_set import source_fingerprint

    if fmt not in ("parquet", "csv"):
        raise BatchError(f"format must be 'parquet' or 'csv', got {fmt!r}")
    if chunk_size < 1:
        raise BatchError(f"chunk_size must be ≥ 1, got {chunk_size}")
    if not 1 <= top_n <= 100:
        raise BatchError(f"top_n must be in 1..100, got {top_n}")
    t = as_timestamp(as_of, "as_of")
    store.check()
    if not models.loaded:
        raise BatchError("no model is loaded: " + "; ".join(f"{k}: {v}" for k, v in models.unavailable.items()))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    work = Path(tempfile.mkdtemp(prefix="member-ml-batch-"))
    tm = Timings()
    started, cpu_started = time.perf_counter(), time.process_time()
    writer = ChunkWriter(tmp / f"{SCORES}.{fmt}", fmt)
    pair_writer = ChunkWriter(tmp / REPLENISHMENT, "parquet")
    pool = None
    try:
        t0 = time.perf_counter()
        with tm.stage("count", wall=False):
            n_est = count_members(store, t)
        buckets = max(1, math.ceil(n_est / chunk_size))
        if workers is None:  # a worker costs seconds to start (imports, models): worth it on big stores only
            workers = min(2, os.cpu_count() or 1) if n_est >= AUTO_WORKERS_MEMBERS else 1
        n_workers = max(1, min(buckets, workers))
        items = store.read_optional("items")
        if n_workers > 1:
            if tracking_uri is None:
                import mlflow

                tracking_uri = mlflow.get_tracking_uri()  # where `models` were loaded from
            pool = start_pool(n_workers, models, tracking_uri, items)  # starts while the parent partitions
        with tm.stage("partition", wall=False):
            chunks = partition_store(store, t, buckets, work)
        tm.partition = time.perf_counter() - t0
        tm.features += tm.partition
        categories = None
        if (timing := models.get("timing")) is not None and splits_replenishment(timing.python_model):
            categories = replenishment_categories(chunks, t, timing.python_model, items, pool, tm)
        if progress:
            progress(0, n_est)
        for rows, pairs, chunk_tm in _scored_chunks(chunks, t, models, pool, n_workers, top_n=top_n,
                                                    top_reasons=top_reasons, items=items, fmt=fmt, timings=tm,
                                                    categories=categories):
            tw = time.perf_counter()
            with tm.stage("write", wall=False):
                if len(rows):
                    writer.write(rows)
                if pairs is not None and len(pairs):
                    pair_writer.write(pairs)
            tm.writing += time.perf_counter() - tw
            if chunk_tm is not None:  # a worker's seconds: counted as the share of work each stage took
                tm.merge(chunk_tm)
            if progress:
                progress(writer.rows, n_est)
            del rows, pairs
        tw = time.perf_counter()
        with tm.stage("write", wall=False):
            writer.close()
            pair_writer.close()
        if writer.rows == 0:
            raise BatchError(f"store {store.path} has no member with any row before {t.date()}")
        if pair_writer.rows == 0:  # no reminder anywhere: still an (empty) file, so readers need no special case
            pd.DataFrame({MEMBER_ID: pd.Series([], dtype="string")}).to_parquet(tmp / REPLENISHMENT, index=False)
        seconds = time.perf_counter() - started
        tm.writing += time.perf_counter() - tw
        manifest = {
            "as_of": t.isoformat(), "members": writer.rows, "replenishment_pairs": pair_writer.rows,
            "format": fmt, "files": {"scores": f"{SCORES}.{fmt}", "replenishment": REPLENISHMENT},
            "models": {n: {"version": m.version, "run_id": m.run_id} for n, m in models.loaded.items()},
            "unavailable_models": dict(models.unavailable),
            "top_n": top_n, "chunk_size": chunk_size, "chunks": len(chunks), "workers": n_workers,
            "feature_version": FEATURE_VERSION,
            "source": source_fingerprint(store),
            "seconds": {"total": round(seconds, 3), "partition": round(tm.partition, 3),
                        "features": round(tm.features, 3), "models": round(tm.models, 3),
                        "writing": round(tm.writing, 3), **{k: round(v, 3) for k, v in tm.stages.items()}},
            "cpu_seconds": cpu_summary(tm, time.process_time() - cpu_started),
            "members_per_second": round(writer.rows / seconds, 1) if seconds > 0 else None,
            "written_at": pd.Timestamp.now("UTC").isoformat(),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
        replace_dir(tmp, out)
        return manifest
    except BaseException:
        writer.close()
        pair_writer.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if pool is not None:  # interrupted or failed: queued chunks are dropped, running ones end
            pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(work, ignore_errors=True)


#: CPU stages (Timings.cpu keys) per group: features, models, writing
CPU_GROUPS = {
    "features": ("count", "partition", "features_sql_and_loyalty", "recent_items", "activity", "assemble"),
    "models": ("churn", "ltv", "timing", "replenishment", "recs", "recs_lists"),
    "writing": ("to_arrow", "write"),
}


def cpu_summary(tm: Timings, parent_cpu: float) -> dict[str, float]:
    """CPU seconds per stage summed over the processes, the per-group totals, and the parent process's own total
    (worker start-up, model loading and waiting are outside the stages)."""
    out = {g: round(sum(tm.cpu.get(k, 0.0) for k in keys), 3) for g, keys in CPU_GROUPS.items()}
    out.update({k: round(v, 3) for k, v in tm.cpu.items()})
    out["parent"] = round(parent_cpu, 3)
    return out


def read_scores(folder: Path, columns: list[str] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A scores folder written by `score_store`: (the scores, the manifest)."""
    folder = Path(folder)
    mpath = folder / MANIFEST
    if not mpath.exists():
        raise BatchError(f"{folder} is not a scores folder (no {MANIFEST}; write one with `member-ml score`)")
    manifest = json.loads(mpath.read_text(encoding="utf-8"))
    path = folder / manifest["files"]["scores"]
    if manifest["format"] == "parquet":
        df = pd.read_parquet(path, columns=columns)
        for c in RECS_LISTS + ("churn_reasons",):  # Arrow lists arrive as numpy arrays: plain lists, as in CSV
            if c in df.columns:
                df[c] = [list(v) if v is not None else [] for v in df[c]]
    else:
        df = pd.read_csv(path, usecols=columns)
        for c in RECS_LISTS + ("churn_reasons",):
            if c in df.columns:
                df[c] = [[] if not isinstance(v, str) or not v else v.split("|") for v in df[c]]
        if "rec_scores" in df.columns:
            df["rec_scores"] = [[float(x) for x in v] for v in df["rec_scores"]]
        for c in ("as_of", "next_purchase_date", "next_due_at"):
            if c in df.columns:
                df[c] = pd.to_datetime(df[c])
    df[MEMBER_ID] = df[MEMBER_ID].astype("string")
    return df, manifest


def read_replenishment(folder: Path) -> pd.DataFrame:
    p = Path(folder) / REPLENISHMENT
    return pd.read_parquet(p) if p.exists() else pd.DataFrame({MEMBER_ID: pd.Series([], dtype="string")})
