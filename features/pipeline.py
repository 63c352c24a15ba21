"""Point-in-time member features (DESIGN §4): the batch pipeline and the inline (online) path, one definition.

`compute_features(source, as_of)` runs the SQL in features/definitions/ through an engine (DuckDB by default) over a
Store's Parquet files (out-of-core) or over in-memory DataFrames (a member's inline history at serving time), then
adds the loyalty state of `loyalty.batch` (the same rules on both paths). On DuckDB the engine codes member, order
and item ids and hands the rules integer arrays (`features.loyalty_arrays`: no pandas string columns; members are
coded by the sorted distinct ids of the tables, the same population as the feature rows, so the state lines up with
them row for row), and the rules run in member parts of ~4M order lines to bound memory, in a worker thread beside
the feature SQL (`_features_beside_loyalty`); other engines fetch DataFrames for `member_state`. Loyalty state is per
member, so neither the coding nor the parts can change it (tests compare both paths).

Population (one row each): every member known strictly before `as_of` from any present table: a member with an
order line (any status), an event, or a members row whose joined_at is before as_of or unknown. Members without paid
orders get 0 counts and null recency / monetary / ratio features. `members=[...]` restricts the population (and
the rows read) to those ids. Only rows strictly before `as_of` are read; rows at or after it cannot change a feature
(tested by property tests).

Numeric features are float64 (null = NaN); categorical features are strings (`categorical_features()`): convert
them for LightGBM with `pd.Categorical`. `FEATURE_VERSION` changes whenever a definition's meaning changes.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute

from features.definitions import FeatureSpec, definitions_digest, feature_plan, feature_specs
from features.definitions.recent_items import RECENT_ITEMS_DAYS, recent_items_plan
from features.engine import Engine, Plan, TableSource, as_timestamp, open_engine, sql_literal_timestamp

FEATURE_VERSION = "1.1"  # 1.1: exact decimal money sums and integer-second gaps (bit-for-bit reproducible)

LOYALTY_FEATURES: tuple[str, ...] = ("tier_rank", "points_balance", "spend_to_next_tier")
_LOYALTY_DESCRIPTIONS = {
    "tier_rank": "loyalty tier index (0 = lowest) at T, from loyalty.batch.member_state",
    "points_balance": "points balance at T (after expiry), from the loyalty ledger",
    "spend_to_next_tier": "spend still needed to reach the next tier (null at the top tier)",
}


def loyalty_state_fn():  # noqa: ANN201 - returns the callable or None
    """The loyalty package's `member_state(orders, events, members, as_of)` if installed (the seam), else None."""
    try:
        from loyalty.batch import member_state
    except ImportError:
        return None
    return member_state


def feature_names(tables_present: Iterable[str] = ("orders", "members", "events", "items")) -> list[str]:
    """Feature columns (after member_id) produced when these tables are present, in output order."""
    names = [s.name for s in feature_specs(tables_present)]
    if loyalty_state_fn() is not None:
        names += list(LOYALTY_FEATURES)
    return names


def categorical_features(tables_present: Iterable[str] = ("orders", "members", "events", "items")) -> list[str]:
    """The string-valued feature columns (everything else is float64)."""
    return [s.name for s in feature_specs(tables_present) if s.kind == "categorical"]


def feature_catalog(tables_present: Iterable[str] = ("orders", "members", "events", "items")) -> pd.DataFrame:
    """name, family, kind, description of every feature: the documentation of record."""
    rows = [{"name": s.name, "family": s.family, "kind": s.kind, "description": s.description}
            for s in feature_specs(tables_present)]
    if loyalty_state_fn() is not None:
        rows += [{"name": n, "family": "loyalty", "kind": "numeric", "description": _LOYALTY_DESCRIPTIONS[n]}
                 for n in LOYALTY_FEATURES]
    return pd.DataFrame(rows)


LOYALTY_ORDER_COLUMNS = "order_id, member_id, ordered_at, amount, item_id, category, quantity, status"
LOYALTY_CHUNK_ROWS = 4_000_000  # order lines per loyalty part (DuckDB: rules run two parts at a time; other engines:
#                                 rows fetched per member batch): bounds memory on large stores


def _loyalty_event_types() -> list[str] | None:
    """Event types the loyalty rules read (others need not be fetched), or None to fetch every type."""
    try:
        from loyalty import batch
        from loyalty.config import load_config
    except ImportError:
        return None
    fn = getattr(batch, "event_types", None) or getattr(batch, "_event_types", None)
    return None if fn is None else sorted(fn(load_config()))


def loyalty_queries(tables: Iterable[str], t: pd.Timestamp, part: str = "") -> dict[str, str]:
    """The SELECTs (DuckDB dialect) giving `loyalty.batch.member_state` its orders, events and members strictly before
    `t`: only the columns and event types the rules read (`part` is an extra `AND …` condition, e.g. a member
    bucket). Shared by `_loyalty_from_frames` and batch scoring on Spark (serving/spark_batch.py)."""
    lit = sql_literal_timestamp(t)
    out = {"orders": f"SELECT {LOYALTY_ORDER_COLUMNS} FROM orders WHERE ordered_at < {lit}{part}"}
    if "events" in tables:
        types = _loyalty_event_types()
        in_types = None if types is None else "type IN (" + ", ".join(f"'{x}'" for x in types) + ")"
        ev_sql = f"SELECT member_id, occurred_at, type, item_id, value FROM events WHERE occurred_at < {lit}{part}"
        if in_types is not None:  # other types only make a member known: their first one is enough
            ev_sql = (f"{ev_sql} AND {in_types} UNION ALL "
                      f"SELECT member_id, MIN(occurred_at), MIN(type), NULL, NULL FROM events "
                      f"WHERE occurred_at < {lit}{part} AND NOT {in_types} GROUP BY member_id")
        out["events"] = ev_sql
    if "members" in tables:
        out["members"] = f"SELECT * FROM members WHERE (joined_at IS NULL OR joined_at < {lit}){part}"
    return out


def _loyalty_columns(state: pd.DataFrame) -> pd.DataFrame:
    """member_id + LOYALTY_FEATURES (float64) of a `member_state` frame (checked)."""
    missing = [c for c in LOYALTY_FEATURES if c not in state.columns]
    if missing:
        raise ValueError(f"loyalty.batch.member_state returned no column(s) {missing}; got {list(state.columns)}")
    out = state[["member_id", *LOYALTY_FEATURES]].copy()
    out["member_id"] = out["member_id"].astype("string")
    for c in LOYALTY_FEATURES:
        out[c] = pd.to_numeric(out[c], errors="raise").astype("float64")
    return out


def _arrays_path(fn: object, eng: Engine) -> bool:
    """Whether the loyalty state can be computed from DuckDB-coded arrays (`features.loyalty_arrays`): the engine
    is DuckDB and the seam is the loyalty package's own `member_state` (whose rules that path runs)."""
    from features.engine import DuckDBEngine

    try:
        from loyalty.batch import member_state
    except ImportError:
        return False
    return fn is member_state and isinstance(eng, DuckDBEngine)


class _LoyaltyJob(NamedTuple):
    """The loyalty state at T, ready to compute: `run()` returns (loyalty feature columns, full `member_state`
    frame). `detached`: `run` never touches the engine (its rows are already fetched), so it may run in another
    thread while the engine runs the feature SQL."""

    run: Callable[[], tuple[pd.DataFrame, pd.DataFrame]]
    detached: bool


def _loyalty_job(eng: Engine, tables: frozenset[str], t: pd.Timestamp,
                 member_ids: Sequence[str] | pd.Series | None = None) -> _LoyaltyJob | None:
    """The one place that picks how the loyalty state is computed (None without the loyalty package).

    On DuckDB the engine codes the ids and the rows are fetched now as integer arrays (`features.loyalty_arrays`);
    members are coded by `member_ids` when given (the feature population, sorted: the state then lines up row for
    row with the feature frame), else by the sorted distinct ids of the tables; the returned job runs the rules
    (numpy only: detached) in member parts of at most LOYALTY_CHUNK_ROWS order lines (memory). Other engines: the
    job fetches the rows as DataFrames (`loyalty_queries`) for `member_state`, in member batches (hash of
    member_id) on large stores. Loyalty state is per member, so neither cut changes it."""
    fn = loyalty_state_fn()
    if fn is None:
        return None
    if _arrays_path(fn, eng):
        from features.loyalty_arrays import loyalty_state_job

        rules = loyalty_state_job(eng.con, tables, t, member_ids, LOYALTY_CHUNK_ROWS,  # type: ignore[attr-defined]
                                  _loyalty_event_types())

        def run_arrays() -> tuple[pd.DataFrame, pd.DataFrame]:
            state = rules()[0]
            return _loyalty_columns(state), state

        return _LoyaltyJob(run_arrays, detached=True)
    return _LoyaltyJob(lambda: _loyalty_from_frames(eng, tables, t, fn), detached=False)


def _loyalty_from_frames(eng: Engine, tables: frozenset[str], t: pd.Timestamp,
                         fn: Callable[..., pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`fn(orders, events, members, t)` over DataFrames fetched with `loyalty_queries`, in member batches (hash of
    member_id) of about LOYALTY_CHUNK_ROWS order lines."""
    lit = sql_literal_timestamp(t)
    n = int(eng.run(Plan((), f"SELECT COUNT(*) AS n FROM orders WHERE ordered_at < {lit}"))["n"].iloc[0])
    k = max(1, -(-n // LOYALTY_CHUNK_ROWS))
    parts, states = [], []
    for i in range(k):
        part = "" if k == 1 else f" AND HASH(member_id) % {k} = {i}"
        queries = loyalty_queries(tables, t, part)
        orders = eng.run(Plan((), queries["orders"]))
        events = eng.run(Plan((), queries["events"])) if "events" in queries else None
        members = eng.run(Plan((), queries["members"])) if "members" in queries else None
        state = fn(orders, events, members, t)
        del orders, events, members
        parts.append(_loyalty_columns(state))
        states.append(state)
    if k == 1:
        return parts[0], states[0]
    return (pd.concat(parts, ignore_index=True),
            pd.concat(states, ignore_index=True).sort_values("member_id", ignore_index=True))


def _loyalty_features(eng: Engine, tables: frozenset[str], t: pd.Timestamp,
                      member_ids: Sequence[str] | pd.Series | None = None
                      ) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """(loyalty feature columns, full `loyalty.batch.member_state` frame) at T over the rows strictly before T,
    computed now (see `_loyalty_job`). None without the loyalty package."""
    job = _loyalty_job(eng, tables, t, member_ids)
    return None if job is None else job.run()


def _join_loyalty(df: pd.DataFrame, loyalty: pd.DataFrame) -> pd.DataFrame:
    """`df` LEFT JOIN `loyalty` on member_id (loyalty columns appended; NaN for members without a loyalty row),
    without copying the wide feature frame the way `merge` does (loyalty state has one row per member). When both
    list the same members in the same order (the DuckDB path codes members by the feature rows) the columns are
    taken as they are."""
    same = len(loyalty) == len(df) and bool(
        pa.compute.all(pa.compute.equal(pa.array(loyalty["member_id"], type=pa.string()),
                                        pa.array(df["member_id"], type=pa.string()))).as_py() or len(df) == 0)
    if same:
        for c in LOYALTY_FEATURES:
            df[c] = loyalty[c].to_numpy(dtype="float64")
        return df
    idx = pd.Index(loyalty["member_id"])
    if not idx.is_unique:
        dup = idx[idx.duplicated()][:5].tolist()
        raise ValueError(f"loyalty.batch.member_state returned several rows for member_id(s) {dup}")
    pos = idx.get_indexer(df["member_id"])  # -1: no loyalty row → the NaN appended below
    for c in LOYALTY_FEATURES:
        df[c] = np.append(loyalty[c].to_numpy(dtype="float64"), np.nan)[pos]
    return df


def _features_beside_loyalty(eng: Engine, tables: frozenset[str], t: pd.Timestamp, job: _LoyaltyJob
                             ) -> tuple[pd.DataFrame, tuple[pd.DataFrame, pd.DataFrame]]:
    """The feature SQL and a detached loyalty job (its arrays already fetched; on DuckDB members are coded by the
    sorted distinct ids of the tables, `member_codes_sql`: the same population as the feature rows), overlapped:
    the rules (numpy, which releases the GIL; they never touch the connection) run in a worker thread while the
    connection runs the feature SQL. The rules alone keep ~1.4 of the 2 cores busy and the SQL ~1.9, so running
    them side by side fills the idle core time; the state does not depend on when it is computed. `_join_loyalty`
    lines the state up with the feature rows (row for row when the populations agree)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="loyalty") as pool:
        fut = pool.submit(job.run)
        try:
            df = eng.run(feature_plan(sql_literal_timestamp(t), tables))
        finally:
            loyalty = fut.result()  # waits for the rules (and raises their error) before the engine closes
    return df, loyalty


def compute_features(source: TableSource, as_of: object, *, engine: str | Engine = "duckdb",
                     members: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per member known before `as_of`: member_id, then the features (see module docstring).

    `source` is a Store (Parquet read in place) or a dict of contract DataFrames (orders required; members,
    events, items optional: a missing table gives a smaller feature set). `df.attrs` records as_of, version, tables.
    """
    return compute_features_and_loyalty(source, as_of, engine=engine, members=members)[0]


def compute_features_and_loyalty(source: TableSource, as_of: object, *, engine: str | Engine = "duckdb",
                                 members: Sequence[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """`compute_features` plus the full `loyalty.batch.member_state` frame its loyalty features come from (tier
    names, points expiring, segments, benefits; None without the loyalty package): batch scoring needs both and
    computes the ledger once."""
    t = as_timestamp(as_of, "as_of")
    eng, tables, owned = open_engine(source, engine, member_ids=members)
    try:
        job = _loyalty_job(eng, tables, t)
        if job is not None and job.detached:
            df, loyalty = _features_beside_loyalty(eng, tables, t, job)
        else:
            df = eng.run(feature_plan(sql_literal_timestamp(t), tables))
            loyalty = None if job is None else job.run()
    finally:
        if owned:
            eng.close()
    return _finish(df, tables, t, loyalty)


def _finish(df: pd.DataFrame, tables: frozenset[str], t: pd.Timestamp,
            loyalty: tuple[pd.DataFrame, pd.DataFrame | None] | None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The feature frame as returned: typed ids and categoricals, the loyalty columns joined, provenance attrs."""
    df["member_id"] = df["member_id"].astype("string")
    for c in categorical_features(tables):
        df[c] = df[c].astype("string")
    state = None
    if loyalty is not None:
        loyalty, state = loyalty
        df = _join_loyalty(df, loyalty)
    df = df.reset_index(drop=True)
    df.attrs.update({"as_of": t.isoformat(), "feature_version": FEATURE_VERSION,
                     "definitions": definitions_digest(tables), "tables": sorted(tables)})
    return df, state


def compute_inline_features(tables: Mapping[str, pd.DataFrame], as_of: object, *, engine: str | Engine = "duckdb",
                            loyalty: pd.DataFrame | None = None) -> pd.DataFrame:
    """`compute_features` over one inline history (in-memory contract tables), for serving.

    `loyalty`: the member's loyalty state at `as_of` already computed by the caller with the rules `member_state`
    uses here (`loyalty.config.load_config()`), e.g. `loyalty.member.member_state(...).model_dump()` as a one-row
    frame holding member_id and LOYALTY_FEATURES. The loyalty columns are then taken from it instead of replaying
    the same rows a second time (the one-member replay and the vectorised batch rules give identical states:
    tests/test_inline_loyalty.py). Without it this is exactly `compute_features(tables, as_of, engine=engine)`.
    """
    if loyalty is None or loyalty_state_fn() is None:
        return compute_features(tables, as_of, engine=engine)
    t = as_timestamp(as_of, "as_of")
    eng, present, owned = open_engine(tables, engine)
    try:
        df = eng.run(feature_plan(sql_literal_timestamp(t), present))
    finally:
        if owned:
            eng.close()
    return _finish(df, present, t, (_loyalty_columns(loyalty), None))[0]


def compute_recent_items(source: TableSource, as_of: object, *, days: int = RECENT_ITEMS_DAYS,
                         engine: str | Engine = "duckdb", members: Sequence[str] | None = None) -> pd.DataFrame:
    """Per member and item over paid lines and item events in [as_of − days, as_of): the recommender's history
    summary (`recent_items_plan`): category, orders holding the item (n_bought), last/first_bought_at, spend, the
    time-decayed order counts (n_bought_hl14, n_bought_hl56), view/cart/favorite counts and their decayed counts
    (n_view_hl1, n_cart_hl1), last_seen_at; items only seen have rows with n_bought 0."""
    t = as_timestamp(as_of, "as_of")
    eng, tables, owned = open_engine(source, engine, member_ids=members)
    try:
        df = eng.run(recent_items_plan(sql_literal_timestamp(t), tables, days))
    finally:
        if owned:
            eng.close()
    for c in ("member_id", "item_id", "category"):
        df[c] = df[c].astype("string")
    return df


__all__ = ["FEATURE_VERSION", "LOYALTY_FEATURES", "FeatureSpec", "categorical_features", "compute_features",
           "compute_features_and_loyalty", "compute_inline_features",
           "compute_recent_items", "feature_catalog", "feature_names"]
