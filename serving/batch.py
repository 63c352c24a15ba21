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
versions the parent resolved, once), at most two chunks in flight per worker, written in chunk order by the parent:
memory is bounded by (workers × 2) chunks whatever the store size (benchmarks/results/batch.json).

Every feature is a function of the member's own rows, so scoring by bucket gives exactly the whole-store values.
One exception, documented: the replenishment estimator shrinks each member's cycle toward its category's median
cycle and detects "regular" categories from the pairs it sees, i.e. from the bucket's members (tens of thousands at
the default chunk size, so the medians are stable; a small store is a single bucket and exact).
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from features.contract import MEMBER_ID, SCHEMAS
from features.store import Store
from serving.compose import (RECS_LISTS, churn_columns, ltv_columns, recommend_frame, recs_columns,
                             timing_columns)
from serving.models import ModelSet

log = logging.getLogger("member_ml.serving.batch")

SCORES = "scores"
REPLENISHMENT = "replenishment.parquet"
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
    """Seconds spent in each stage (features includes partitioning and reading; models includes replenishment)."""

    partition: float = 0.0
    features: float = 0.0
    models: float = 0.0
    writing: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, seconds: float) -> None:
        self.stages[stage] = self.stages.get(stage, 0.0) + seconds

    def merge(self, other: "Timings") -> None:
        self.features += other.features
        self.models += other.models
        for k, v in other.stages.items():
            self.add(k, v)


# ------------------------------------------------------------------------------------------------- partitioning

def _sql_path(p: Path) -> str:
    return os.fspath(p).replace("'", "''")


def count_members(store: Store, as_of: pd.Timestamp) -> int:
    """Members known before `as_of` (an upper bound from the largest table: sizes the chunks)."""
    import duckdb

    lit = f"TIMESTAMP '{as_of.isoformat(sep=' ')}'"
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
        best = 0
        for table, tcol in (("orders", "ordered_at"), ("events", "occurred_at"), ("members", "joined_at")):
            if not store.has(table):
                continue
            where = f"{tcol} < {lit}" + (" OR joined_at IS NULL" if table == "members" else "")
            n = con.execute(f"SELECT approx_count_distinct(member_id) FROM read_parquet('"
                            f"{_sql_path(store.table_path(table))}') WHERE {where}").fetchone()[0]
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
                        "(FORMAT parquet, PARTITION_BY (bucket), OVERWRITE_OR_IGNORE)")
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

def activity(store: Store, as_of: pd.Timestamp, window_days: int = 365) -> pd.DataFrame:
    """Per member: the hour of day they are most active (orders and events in the last `window_days`), how many
    timestamped actions that is from, and whether they ever completed their profile (a profile_completed event)."""
    import duckdb

    lit = f"TIMESTAMP '{as_of.isoformat(sep=' ')}'"
    since = f"{lit} - INTERVAL {int(window_days)} DAY"
    parts = [f"SELECT member_id, ordered_at AS t FROM read_parquet('{_sql_path(store.table_path('orders'))}') "
             f"WHERE ordered_at < {lit} AND ordered_at >= {since}"]
    has_events = store.has("events")
    if has_events:
        parts.append(f"SELECT member_id, occurred_at AS t FROM read_parquet('{_sql_path(store.table_path('events'))}')"
                     f" WHERE occurred_at < {lit} AND occurred_at >= {since}")
    sql = f"""
        WITH acts AS ({' UNION ALL '.join(parts)}),
        hours AS (SELECT member_id, hour(t) AS h, COUNT(*) AS n FROM acts GROUP BY member_id, hour(t)),
        ranked AS (SELECT member_id, h, n, SUM(n) OVER (PARTITION BY member_id) AS total,
                          ROW_NUMBER() OVER (PARTITION BY member_id ORDER BY n DESC, h) AS r FROM hours)
        SELECT member_id, CAST(h AS DOUBLE) AS active_hour, CAST(total AS DOUBLE) AS active_actions
        FROM ranked WHERE r = 1"""
    con = duckdb.connect()
    try:
        con.execute("SET threads = 1")
        con.execute("SET enable_progress_bar = false")
        act = con.execute(sql).df()
        if has_events:
            prof = con.execute(
                f"SELECT DISTINCT member_id FROM read_parquet('{_sql_path(store.table_path('events'))}') "
                f"WHERE type = 'profile_completed' AND occurred_at < {lit}").df()
        else:
            prof = pd.DataFrame({MEMBER_ID: pd.Series([], dtype="string")})
    finally:
        con.close()
    act[MEMBER_ID] = act[MEMBER_ID].astype("string")
    act = act.set_index(MEMBER_ID)
    act["profile_completed"] = act.index.isin(prof[MEMBER_ID].astype("string"))
    out = act.reset_index()
    missing = prof.loc[~prof[MEMBER_ID].astype("string").isin(out[MEMBER_ID]), MEMBER_ID].astype("string")
    if len(missing):
        out = pd.concat([out, pd.DataFrame({MEMBER_ID: missing.to_numpy(), "active_hour": np.nan,
                                            "active_actions": 0.0, "profile_completed": True})], ignore_index=True)
    # without an events table nobody can be known to have completed a profile: unknown, not "no"
    out["profile_completed"] = out["profile_completed"].astype("boolean")
    if not has_events:
        out["profile_completed"] = pd.array([pd.NA] * len(out), dtype="boolean")
    return out


def replenishment_due(model: Any, store: Store, as_of: pd.Timestamp,
                      items: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The timing champion's replenishment cycles for the chunk: (reminder pairs, per-member soonest due)."""
    estimate = getattr(model, "replenishment", None)
    empty = pd.DataFrame({MEMBER_ID: pd.Series([], dtype="string")})
    if estimate is None:
        return pd.DataFrame(), empty
    cols = [c for c in (MEMBER_ID, "ordered_at", "category", "item_id", "status")]
    orders = pd.read_parquet(store.table_path("orders"), columns=cols)
    cycles = estimate(orders, as_of, items=items)
    pairs = cycles[cycles["reminder"].astype(bool)].reset_index(drop=True)
    upcoming = pairs[pairs["days_until_due"] >= -7].sort_values(["days_until_due", "category"], kind="mergesort")
    first = upcoming.drop_duplicates(MEMBER_ID)
    summary = pd.DataFrame({
        MEMBER_ID: first[MEMBER_ID].astype("string").to_numpy(),
        "next_due_category": first["category"].astype("string").to_numpy(),
        "next_due_at": first["due_at"].astype("datetime64[us]").to_numpy(),
        "days_until_due": first["days_until_due"].astype("float64").to_numpy(),
        "due_cycle_days": first["due_cycle_days"].astype("float64").to_numpy(),
    })
    return pairs, summary


def score_chunk(chunk: Store, as_of: pd.Timestamp, models: ModelSet, *, top_n: int = 10, top_reasons: int = 3,
                items: pd.DataFrame | None = None, timings: Timings | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score every member of one (small) store: (one row per member, replenishment reminder pairs)."""
    from features.engine import DuckDBEngine
    from features.pipeline import compute_features_and_loyalty, compute_recent_items

    tm = timings or Timings()
    t0 = time.perf_counter()
    with DuckDBEngine(threads=int(os.environ.get("MEMBER_ML_DUCKDB_THREADS", "0")) or None) as eng:
        feats, state = compute_features_and_loyalty(chunk, as_of, engine=eng)
        recent = compute_recent_items(chunk, as_of, engine=eng) if models.get("recs") else None
    act = activity(chunk, as_of)
    t1 = time.perf_counter()
    tm.features += t1 - t0
    tm.add("features_sql_and_loyalty", t1 - t0)

    ids = feats[MEMBER_ID].astype("string")
    out = pd.DataFrame({MEMBER_ID: ids.to_numpy(), "as_of": pd.Series(as_of, index=feats.index)
                        .astype("datetime64[us]").to_numpy()})
    if state is not None:
        st = state.set_index(state[MEMBER_ID].astype("string"))
        for c in LOYALTY_COLUMNS:
            if c in st.columns:
                out[c] = st[c].reindex(ids.to_numpy()).reset_index(drop=True)
    for c in FEATURE_COLUMNS:
        if c in feats.columns:
            out[c] = feats[c].to_numpy()
    a = act.set_index(MEMBER_ID).reindex(ids.to_numpy())
    out["active_hour"] = a["active_hour"].to_numpy(dtype="float64")
    out["active_actions"] = a["active_actions"].fillna(0.0).to_numpy(dtype="float64")
    # a member absent from `act` has no recent action and no profile_completed event: known "no" when the store
    # has events, unknown without an events table
    out["profile_completed"] = (a["profile_completed"].astype("boolean").fillna(False).to_numpy()
                                if chunk.has("events") else pd.array([pd.NA] * len(out), dtype="boolean"))

    t2 = time.perf_counter()
    if (m := models.get("churn")) is not None:
        out = _join(out, churn_columns(m.python_model, feats, top_reasons))
    if (m := models.get("ltv")) is not None:
        out = _join(out, ltv_columns(m.python_model, feats))
    if "churn_probability" in out.columns and "ltv" in out.columns:
        out["value_at_risk"] = out["churn_probability"] * out["ltv"]
    pairs = pd.DataFrame()
    if (m := models.get("timing")) is not None:
        out = _join(out, timing_columns(m.python_model, feats, as_of))
        t_rep = time.perf_counter()
        pairs, due = replenishment_due(m.python_model, chunk, as_of, items)
        tm.add("replenishment", time.perf_counter() - t_rep)
        out = _join(out, due)
    if (m := models.get("recs")) is not None:
        t_recs = time.perf_counter()
        ranked = recommend_frame(m.python_model, recent, ids.tolist(), top_n, as_of)
        out = _join(out, recs_columns(ranked, ids.tolist(), top_n))
        tm.add("recs", time.perf_counter() - t_recs)
    tm.models += time.perf_counter() - t2
    return out, pairs


def _join(left: pd.DataFrame, right: pd.DataFrame) -> pd.DataFrame:
    r = right.drop_duplicates(MEMBER_ID).set_index(MEMBER_ID)
    r.index = r.index.astype("string")
    out = left.join(r, on=MEMBER_ID)
    for c in r.columns:
        if c in RECS_LISTS:
            out[c] = [v if isinstance(v, list) else [] for v in out[c]]
    return out


# ------------------------------------------------------------------------------------------- worker processes

_WORKER: dict[str, Any] = {}


def _init_worker(pins: dict[str, str], tracking_uri: str | None) -> None:
    """Load the parent's exact model versions once per worker process (one thread each: the workers are the
    parallelism)."""
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


def _score_in_worker(path: str, as_of: pd.Timestamp, top_n: int, top_reasons: int,
                     items: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame, Timings]:
    tm = Timings()
    rows, pairs = score_chunk(Store(path), as_of, _WORKER["models"], top_n=top_n, top_reasons=top_reasons,
                              items=items, timings=tm)
    shutil.rmtree(path, ignore_errors=True)
    return rows, pairs, tm


def _scored_chunks(chunks: list[Store], as_of: pd.Timestamp, models: ModelSet, workers: int,
                   tracking_uri: str | None, *, top_n: int, top_reasons: int, items: pd.DataFrame | None,
                   timings: Timings):  # noqa: ANN202 - a generator of (rows, pairs, worker timings or None)
    """Score the chunks in order, in this process or in `workers` processes (at most two chunks in flight per
    worker, so memory stays bounded)."""
    if workers <= 1:
        for chunk in chunks:
            rows, pairs = score_chunk(chunk, as_of, models, top_n=top_n, top_reasons=top_reasons, items=items,
                                      timings=timings)
            shutil.rmtree(chunk.path, ignore_errors=True)
            yield rows, pairs, None
        return
    import multiprocessing as mp
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    pins = {n: m.version for n, m in models.loaded.items()}
    env = {"OMP_NUM_THREADS": "1", "MEMBER_ML_DUCKDB_THREADS": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # inherited by the spawned workers (read when lightgbm / duckdb start there)
    try:
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                 initargs=(pins, tracking_uri)) as pool:
            pending: deque = deque()
            todo = iter(chunks)
            for chunk in todo:
                pending.append(pool.submit(_score_in_worker, str(chunk.path), as_of, top_n, top_reasons, items))
                if len(pending) >= 2 * workers:
                    break
            try:
                while pending:
                    rows, pairs, tm = pending.popleft().result()
                    nxt = next(todo, None)
                    if nxt is not None:
                        pending.append(pool.submit(_score_in_worker, str(nxt.path), as_of, top_n, top_reasons,
                                                   items))
                    yield rows, pairs, tm
            except BaseException:  # interrupted or failed: drop the queued chunks, let the running ones end
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ---------------------------------------------------------------------------------------------------- writing

class ChunkWriter:
    """Append DataFrames to one Parquet or CSV file with a schema fixed by the first chunk (nulls typed sensibly)."""

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

    def write(self, df: pd.DataFrame) -> None:
        import pyarrow as pa

        if self.fmt == "csv":
            df = df.copy()
            for c in RECS_LISTS + ("churn_reasons",):
                if c in df.columns:
                    df[c] = ["|".join(str(x) for x in v) for v in df[c]]
        table = pa.Table.from_pandas(df, preserve_index=False)
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
        self.rows += len(df)

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
    started = time.perf_counter()
    writer = ChunkWriter(tmp / f"{SCORES}.{fmt}", fmt)
    pair_writer = ChunkWriter(tmp / REPLENISHMENT, "parquet")
    try:
        t0 = time.perf_counter()
        n_est = count_members(store, t)
        buckets = max(1, math.ceil(n_est / chunk_size))
        chunks = partition_store(store, t, buckets, work)
        tm.partition = time.perf_counter() - t0
        tm.features += tm.partition
        items = store.read_optional("items")
        if progress:
            progress(0, n_est)
        if workers is None:  # a worker costs seconds to start (imports, models): worth it on big stores only
            workers = min(2, os.cpu_count() or 1) if n_est >= AUTO_WORKERS_MEMBERS else 1
        n_workers = max(1, min(len(chunks), workers))
        if n_workers > 1 and tracking_uri is None:
            import mlflow

            tracking_uri = mlflow.get_tracking_uri()  # where `models` were loaded from
        for rows, pairs, chunk_tm in _scored_chunks(chunks, t, models, n_workers, tracking_uri, top_n=top_n,
                                                    top_reasons=top_reasons, items=items, timings=tm):
            tw = time.perf_counter()
            if len(rows):
                writer.write(rows)
            if len(pairs):
                pair_writer.write(pairs)
            tm.writing += time.perf_counter() - tw
            if chunk_tm is not None:  # a worker's seconds: counted as the share of work each stage took
                tm.merge(chunk_tm)
            if progress:
                progress(writer.rows, n_est)
            del rows, pairs
        tw = time.perf_counter()
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
        shutil.rmtree(work, ignore_errors=True)


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
