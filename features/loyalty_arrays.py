"""The loyalty rules' inputs coded by DuckDB: integer arrays straight from Arrow, no pandas string columns.

`loyalty.batch.member_state` over DataFrames (what `loyalty_queries` feeds it) spends most of its time turning
tens of millions of id strings into codes in pandas. Here DuckDB does that while it scans the Parquet files, in one
pass per table:
- member codes: a join to one member-code table, the feature population itself (the SQL features' member ids,
  sorted, so code = row of the feature frame; see `features.pipeline`), or the sorted distinct ids of the three
  tables when no such list is given;
- order and item codes: DuckDB's 64-bit `hash()` of the id (order codes made dense in numpy with `pd.factorize`
  over integers; item codes are the hash without its sign bit). Two different ids with the same hash would be
  taken for one: probability ≈ n² / 2⁶⁵ for n distinct ids (~4e-6 for the 12.6M orders of the 1M-member
  benchmark store; ~1e-12 for its items);
- times as int64 µs (`epoch_us`), statuses as small codes, the category bonus per line, the rule event types as
  codes; birth month and joined time per member.
`loyalty.arrays.prepare_arrays` then applies the rules' own checks and deduplication, so the state equals what
`member_state` computes from the same rows (tests compare them).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.contract import STATUSES
from features.engine import sql_literal_timestamp


#: an item's code: its 64-bit hash without the sign bit (-1: no item); item codes only match lines of one item, so
#: they need not be dense (order codes must be: the rules count per order code)
_ITEM_CODE = "CASE WHEN {0} IS NULL THEN CAST(-1 AS BIGINT) ELSE CAST(hash({0}) >> 1 AS BIGINT) END"


def _q(s: str) -> str:
    return "'" + str(s).replace("'", "''") + "'"


_BATCH_ROWS = 1 << 20


def _stream(con: Any, sql: str, fills: dict[str, object]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """A query's columns as numpy arrays (their own types; nulls replaced by `fills[name]` where given, floats
    keep NaN) and the null count of each column, read batch by batch: neither DuckDB nor Arrow holds the whole
    result besides the arrays (memory)."""
    parts: dict[str, list[np.ndarray]] = {}
    nulls: dict[str, int] = {}
    reader = con.sql(sql).to_arrow_reader(_BATCH_ROWS)
    for batch in reader:
        for name, col in zip(batch.schema.names, batch.columns):
            nulls[name] = nulls.get(name, 0) + col.null_count
            if col.null_count and fills.get(name) is not None:
                col = col.fill_null(fills[name])
            parts.setdefault(name, []).append(np.asarray(col.to_numpy(zero_copy_only=False)))
    if not parts:  # no rows: empty columns of the result's types
        schema = reader.schema
        return ({f.name: np.asarray(pa.array([], type=f.type).to_numpy(zero_copy_only=False)) for f in schema},
                {f.name: 0 for f in schema})
    out = {}
    for name in list(parts):
        chunks = parts.pop(name)
        out[name] = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
        del chunks
    return out, nulls


def _dense(hashes: np.ndarray) -> np.ndarray:
    """Dense codes (0, 1, …) of 64-bit hashes."""
    return pd.factorize(hashes.view(np.int64))[0].astype(np.int64, copy=False)


class MemberCodeError(LookupError):
    """Some rows belong to members outside the given member-code list (the caller builds the full list instead)."""


def _check_members(con: Any, m_nulls: int, table: str, source_sql: str, id_col: str = "member_id") -> None:
    """Rows without a member code: a null member id (an error, named as `member_state` names it) or a member
    missing from the code list (MemberCodeError)."""
    if not m_nulls:
        return
    from loyalty.frames import LoyaltyInputError

    nulls = con.sql(f"SELECT COUNT(*) FROM ({source_sql}) WHERE {id_col} IS NULL").fetchall()[0][0]
    if nulls:
        raise LoyaltyInputError(f"{table}.{id_col}: {nulls} null value(s); this column is required (ingest "
                                "quarantines such rows)")
    raise MemberCodeError(table)


def member_codes_sql(tables: Iterable[str], t: pd.Timestamp) -> str:
    """Sorted distinct member ids with a row before `t` in any table (the loyalty population)."""
    lit = sql_literal_timestamp(t)
    parts = [f"SELECT member_id FROM orders WHERE ordered_at < {lit}"]
    if "events" in tables:
        parts.append(f"SELECT member_id FROM events WHERE occurred_at < {lit}")
    if "members" in tables:
        parts.append(f"SELECT member_id FROM members WHERE joined_at IS NULL OR joined_at < {lit}")
    # DISTINCT: with orders alone there is no UNION to drop the repeats
    return (f"SELECT DISTINCT member_id FROM ({' UNION '.join(parts)}) WHERE member_id IS NOT NULL "
            "ORDER BY member_id")


def fetch_arrays(con: Any, tables: Iterable[str], t: pd.Timestamp, member_ids: pa.Array,
                 event_types: Sequence[str] | None, category_bonus: dict[str, int]) -> dict[str, Any]:
    """Coded arrays for `loyalty.arrays.prepare_arrays` from the engine's `orders`, `events`, `members` views
    (rows strictly before `t`), member codes = positions in `member_ids` (sorted). `event_types` None: every type
    present is a rule type. Raises MemberCodeError when some row's member is not in `member_ids`."""
    from loyalty.frames import LoyaltyInputError

    tables = frozenset(tables)
    lit = sql_literal_timestamp(t)
    ids = pa.table({"member_id": member_ids.cast(pa.string()),
                    "m": pa.array(np.arange(len(member_ids), dtype=np.int32))})
    con.register("loy_member_codes", ids)
    try:
        out: dict[str, Any] = {}
        # -- orders ---------------------------------------------------------------------------------------------
        src = f"SELECT * FROM orders WHERE ordered_at < {lit}"
        status = ("CAST(CASE WHEN o.status IS NULL THEN 0 "
                  + " ".join(f"WHEN o.status = {_q(s)} THEN {i}" for i, s in enumerate(STATUSES))
                  + " ELSE -1 END AS TINYINT)")
        bonus = ("CAST(CASE " + " ".join(f"WHEN o.category = {_q(c)} THEN {int(p)}" for c, p in category_bonus.items())
                 + " ELSE 0 END AS INTEGER)") if category_bonus else "CAST(0 AS INTEGER)"
        o, nulls = _stream(con, f"""
            SELECT c.m AS m, epoch_us(o.ordered_at) AS t,
              CASE WHEN o.order_id IS NOT NULL THEN hash(o.order_id) END AS order_h,
              {_ITEM_CODE.format("o.item_id")} AS item,
              CAST(o.amount AS DOUBLE) AS amount, CAST(o.quantity AS DOUBLE) AS qty, {status} AS status,
              {bonus} AS bonus
            FROM ({src}) o LEFT JOIN loy_member_codes c ON c.member_id = o.member_id""",
                           {"m": -1, "order_h": 0, "status": 0, "bonus": 0})
        _check_members(con, nulls.get("m", 0), "orders", src)
        if nulls.get("order_h"):
            raise LoyaltyInputError(f"orders.order_id: {nulls['order_h']} null value(s); this column is required "
                                    "(ingest quarantines such rows)")
        if (o["status"] < 0).any():
            bad = [r[0] for r in con.sql(
                f"SELECT DISTINCT CAST(status AS VARCHAR) FROM ({src}) WHERE status IS NOT NULL AND status NOT IN "
                f"({', '.join(_q(s) for s in STATUSES)}) ORDER BY 1 LIMIT 5").fetchall()]
            raise LoyaltyInputError(f"orders.status: unknown value(s) {bad}; allowed: {list(STATUSES)}")
        o["order"] = _dense(o.pop("order_h"))
        out["orders"] = o
        del o
        # -- events ---------------------------------------------------------------------------------------------
        out["events"] = None
        types = list(event_types) if event_types is not None else []
        if "events" in tables:
            src = f"SELECT * FROM events WHERE occurred_at < {lit}"
            if event_types is None:
                types = [r[0] for r in con.sql(
                    f"SELECT DISTINCT type FROM ({src}) WHERE type IS NOT NULL ORDER BY type").fetchall()]
            tcase = ("CAST(CASE WHEN e.type IS NULL THEN -2 "
                     + " ".join(f"WHEN e.type = {_q(x)} THEN {i}" for i, x in enumerate(types))
                     + " ELSE -1 END AS INTEGER)")
            ev, nulls = _stream(con, f"""
                SELECT c.m AS m, epoch_us(e.occurred_at) AS t, {tcase} AS type, CAST(e.value AS DOUBLE) AS value,
                  {_ITEM_CODE.format("e.item_id")} AS item
                FROM ({src}) e LEFT JOIN loy_member_codes c ON c.member_id = e.member_id""", {"m": -1, "type": -1})
            _check_members(con, nulls.get("m", 0), "events", src)
            if (ev["type"] == -2).any():
                raise LoyaltyInputError(f"events.type: {int((ev['type'] == -2).sum())} null value(s); this column "
                                        "is required (ingest quarantines such rows)")
            out["events"] = ev
            del ev
        out["event_types"] = types
        # -- members --------------------------------------------------------------------------------------------
        out["members"] = None
        if "members" in tables:
            src = f"SELECT * FROM members WHERE joined_at IS NULL OR joined_at < {lit}"
            mem, nulls = _stream(con, f"""
                SELECT c.m AS m, CAST(MONTH(x.birthday) AS INTEGER) AS birth_month,
                  epoch_us(x.joined_at) AS joined
                FROM ({src}) x LEFT JOIN loy_member_codes c ON c.member_id = x.member_id""",
                                 {"m": -1, "birth_month": 0, "joined": int(np.iinfo(np.int64).min)})
            _check_members(con, nulls.get("m", 0), "members", src)
            out["members"] = mem
        return out
    finally:
        con.unregister("loy_member_codes")


def loyalty_state_arrays(con: Any, tables: Iterable[str], t: pd.Timestamp, member_ids: Sequence[str] | None,
                         part_lines: int | None, event_types: Sequence[str] | None,
                         config: Any = None) -> tuple[pd.DataFrame, dict[str, float]]:
    """`loyalty.batch.member_state` at `t` computed from DuckDB-coded arrays (see the module docstring): the state
    frame (one row per member with a row before `t`, sorted by member_id) and the phase timings.

    `member_ids`: the sorted ids to code members by (the feature population); None, or a list missing some
    member, falls back to the sorted distinct ids of the tables. `part_lines` caps the order lines evaluated per
    member part (memory). `event_types`: the types fetched as event rows (others only make a member known; the
    rules read `loyalty.batch.event_types(config)`); None fetches every type."""
    return loyalty_state_job(con, tables, t, member_ids, part_lines, event_types, config)()


def loyalty_state_job(con: Any, tables: Iterable[str], t: pd.Timestamp, member_ids: Sequence[str] | None,
                      part_lines: int | None, event_types: Sequence[str] | None,
                      config: Any = None) -> Callable[[], tuple[pd.DataFrame, dict[str, float]]]:
    """`loyalty_state_arrays` in two steps: fetch the coded arrays now (the only step that uses `con`), and return
    the rest (prepare + rules: numpy only, never touches `con`) as a callable, so that the caller can run it in
    another thread while the connection runs other queries (the feature SQL). The callable is single-use (it
    consumes the arrays)."""
    from loyalty.arrays import prepare_arrays
    from loyalty.batch import category_bonus, evaluate_prepared
    from loyalty.config import load_config

    cfg = config or load_config()
    types = sorted(event_types) if event_types is not None else None  # None: every type is fetched as rows
    ids = None if member_ids is None else pa.array(member_ids, type=pa.string())
    if ids is not None and len(ids) > 1 and not pc.all(pc.less(ids[:-1], ids[1:])).as_py():
        ids = pc.unique(ids.drop_null())  # not sorted (or repeated ids): code by the sorted distinct ids
        ids = ids.take(pc.sort_indices(ids))
    data = None
    if ids is not None:
        try:
            data = fetch_arrays(con, tables, t, ids, types, category_bonus(cfg))
        except MemberCodeError:
            data = None
    if data is None:
        ids = pa.array(con.sql(member_codes_sql(tables, t)).to_arrow_table().column(0)
                       .combine_chunks(), type=pa.string())
        data = fetch_arrays(con, tables, t, ids, types, category_bonus(cfg))
    box = [ids, data]

    def run() -> tuple[pd.DataFrame, dict[str, float]]:
        if not box:
            raise RuntimeError("loyalty_state_job: the job has already run (it consumes its arrays)")
        ids_, data_ = box.pop(0), box.pop(0)
        orders, events, members = data_.pop("orders"), data_.pop("events"), data_.pop("members")
        inp = prepare_arrays(ids_.to_pandas(), orders, events, members, t, data_["event_types"])  # consumes them
        del orders, events, members
        res = evaluate_prepared(inp, cfg, part_lines=part_lines, keep_ledger=False)
        return res.frame, res.timings

    del ids, data
    return run


__all__ = ["MemberCodeError", "fetch_arrays", "loyalty_state_arrays", "loyalty_state_job", "member_codes_sql"]
