"""Input checks and normalisation: contract frames → integer arrays the engine works on.

Only rows strictly before `as_of` are used (point-in-time). Exact duplicate rows count once (idempotent replays):
a 64-bit row hash and one sort find candidate duplicates, which are then compared exactly. Member ids are coded in
sorted order so every result is independent of row order. String columns are never turned into Python objects row
by row (20M-row stores): they are factorised or compared in Arrow, then everything downstream is integer arrays
(plain dicts of numpy columns, no DataFrame consolidation copies). Orders and events are coded in two threads on
big inputs. `prepare` only checks and codes the frames; the normalisation rules themselves (amounts to integer
cents, refunds, the as-of cut, duplicates, first events, the member population) are `loyalty.arrays.prepare_arrays`,
which an engine that codes the ids itself (DuckDB, `features.loyalty_arrays`) calls directly.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.contract import ITEM_ID, MEMBER_ID, OCCURRED_AT, ORDER_ID, ORDERED_AT, STATUSES

NO_TIME = np.iinfo(np.int64).min


class LoyaltyInputError(ValueError):
    """An input frame breaks the data contract (the message names the table, the column and the problem)."""


def to_us(values: pd.Series | pd.Index | np.ndarray | list) -> np.ndarray:
    """Datetimes → int64 microseconds since the epoch (NaT → NO_TIME; tz-aware values converted to UTC first)."""
    s = values if isinstance(values, pd.Series) else pd.Series(values)
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    elif not pd.api.types.is_datetime64_dtype(s.dtype):
        try:
            s = pd.to_datetime(s)
        except (ValueError, TypeError) as exc:
            raise LoyaltyInputError(f"{s.name or 'timestamp'}: not parseable as datetimes ({exc})") from None
    return s.astype("datetime64[us]").to_numpy().view(np.int64)


def as_of_us(as_of: object) -> int:
    try:
        ts = pd.Timestamp(as_of)
    except (ValueError, TypeError):
        raise LoyaltyInputError(f"as_of {as_of!r} is not a date") from None
    if ts is pd.NaT:
        raise LoyaltyInputError(f"as_of {as_of!r} is not a date")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return int(np.datetime64(ts.to_datetime64(), "us").astype(np.int64))


def from_us(values: np.ndarray | list) -> pd.Series:
    """int64 microseconds → datetime64[us] (NO_TIME → NaT)."""
    v = np.asarray(values, dtype=np.int64)
    return pd.Series(v.view("datetime64[us]"))


def _require(df: pd.DataFrame, table: str, columns: list[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise LoyaltyInputError(f"{table}: missing required column(s) {missing}; columns present: {list(df.columns)}")


def _no_nulls(df: pd.DataFrame, table: str, columns: list[str]) -> None:
    for c in columns:
        n = int(df[c].isna().sum())
        if n:
            raise LoyaltyInputError(f"{table}.{c}: {n} null value(s); this column is required "
                                    "(ingest quarantines such rows)")


_K1 = np.uint64(0x9E3779B97F4A7C15)
_K2 = np.uint64(0xBF58476D1CE4E5B9)


def _as_u64(col: np.ndarray) -> np.ndarray:
    """A column's 64-bit pattern (bools and small ints widened; every NaN mapped to one pattern)."""
    a = np.asarray(col)
    if a.dtype.kind == "f":
        a = np.where(np.isnan(a), np.nan, a).astype(np.float64, copy=False)
    elif a.dtype.itemsize != 8:
        a = a.astype(np.int64)
    return np.ascontiguousarray(a).view(np.uint64)


def row_hash(cols: list[np.ndarray]) -> np.ndarray:
    """64-bit hash per row: multiply-xorshift over each column, in place (a few passes per column). Equal rows get
    equal hashes; unequal rows almost never do (callers confirm candidates exactly)."""
    n = len(cols[0])
    h = np.full(n, _K2, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for c in cols:
            np.bitwise_xor(h, _as_u64(c), out=h)
            np.multiply(h, _K1, out=h)
            np.bitwise_xor(h, h >> np.uint64(29), out=h)
        np.multiply(h, _K2, out=h)
        np.bitwise_xor(h, h >> np.uint64(32), out=h)
    return h


def duplicate_rows(cols: list[np.ndarray]) -> np.ndarray:
    """Mask of rows equal (in every column) to an earlier row: a 64-bit row hash finds candidates with one sort
    (no hash table), then candidates are compared exactly (so a hash collision never drops a row)."""
    n = len(cols[0])
    if n == 0:
        return np.zeros(0, dtype=bool)
    h = row_hash(cols)
    s = np.sort(h)
    rep = s[1:][s[1:] == s[:-1]]
    out = np.zeros(n, dtype=bool)
    if len(rep):
        u = np.unique(rep)
        pos = np.minimum(np.searchsorted(u, h), len(u) - 1)
        idx = np.flatnonzero(u[pos] == h)
        sub = pd.DataFrame({i: _as_u64(c)[idx] for i, c in enumerate(cols)})
        out[idx[sub.duplicated().to_numpy()]] = True
    return out


@dataclass(frozen=True)
class Inputs:
    """Normalised inputs. Member codes index `member_ids` (sorted). Times are int64 µs."""

    as_of: int
    member_ids: pd.Index
    lines: dict[str, np.ndarray]  # m, t, order, item, cents, known, refund, bonus (rows before as_of, deduplicated)
    events: dict[str, Any]  # m, t, type (categorical of the rule types), value (event rows before as_of, deduplicated)
    birth_month: np.ndarray  # per member: 1..12, 0 unknown
    joined: np.ndarray       # per member: µs, NO_TIME unknown
    first_event: np.ndarray  # per member: first event of any type before as_of (µs), NO_TIME when none
    duplicates: dict[str, int]

    @property
    def n_members(self) -> int:
        return len(self.member_ids)


def _codes(col: pd.Series) -> tuple[np.ndarray, pd.Index]:
    codes, uniq = pd.factorize(col)
    return codes.astype(np.int64, copy=False), pd.Index(uniq, dtype="string")


_PARALLEL_ROWS = 200_000  # below this the two table parts run one after the other (thread start-up is not free)


def _status_codes(st: pd.Series) -> np.ndarray:
    """orders.status → its index in STATUSES (the `prepare_arrays` status codes; null → paid), one Arrow
    comparison per status (no per-row strings); unknown values are rejected, naming them."""
    code = np.full(len(st), -1, dtype=np.int8)
    code[st.isna().to_numpy(dtype=bool)] = 0
    for i, s in enumerate(STATUSES):
        code[(st == s).to_numpy(dtype=bool, na_value=False)] = i
    bad = code < 0
    if bad.any():
        raise LoyaltyInputError(f"orders.status: unknown value(s) {sorted(map(str, st[bad].unique()))[:5]}; "
                                f"allowed: {list(STATUSES)}")
    return code


def _orders_part(orders: pd.DataFrame, category_bonus: dict[str, int] | None,
                 order_codes: Future | None = None) -> tuple[dict[str, np.ndarray], pd.Index]:
    """Every order line coded as `prepare_arrays` takes it (member codes local to the returned ids): the string
    columns are checked and coded here; the rules' normalisation is `prepare_arrays`'. `order_codes`: the
    order-id codes being computed in another thread (the largest hashing job), else computed here."""
    o_m, o_uniq = _codes(orders[MEMBER_ID])
    amount = pd.to_numeric(orders["amount"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad_amount = orders["amount"].notna().to_numpy() & np.isnan(amount)
    if bad_amount.any():
        raise LoyaltyInputError(f"orders.amount: {int(bad_amount.sum())} value(s) are not numbers")
    del bad_amount
    status = (_status_codes(orders["status"]) if "status" in orders.columns
              else np.zeros(len(orders), dtype=np.int8))
    bonus = np.zeros(len(orders), dtype=np.int64)
    if category_bonus and "category" in orders.columns:
        for cat, pts in category_bonus.items():
            bonus += np.where((orders["category"] == cat).to_numpy(dtype=bool, na_value=False), pts, 0)
    qty = (pd.to_numeric(orders["quantity"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
           if "quantity" in orders.columns else np.ones(len(orders)))
    cols = {"m": o_m, "t": to_us(orders[ORDERED_AT]),
            "order": order_codes.result()[0] if order_codes is not None else _codes(orders[ORDER_ID])[0],
            "item": _codes(orders[ITEM_ID])[0] if ITEM_ID in orders.columns else np.full(len(orders), -1, np.int64),
            "amount": amount, "qty": qty, "status": status, "bonus": bonus}
    return cols, o_uniq


def _events_part(events: pd.DataFrame, T: int, types: list[str] | None
                 ) -> tuple[dict[str, np.ndarray], pd.Index, list[str]]:
    """Every event row coded as `prepare_arrays` takes it (member codes local to the returned ids; type: index in
    the returned rule types, -1 for the other types, which only make their member known), and the rule types
    (`types`, or every type present before T when None). Values and items are only read on rule rows before T
    (the only rows whose value or item `prepare_arrays` keeps)."""
    _no_nulls(events, "events", [MEMBER_ID, OCCURRED_AT, "type"])
    e_m, e_uniq = _codes(events[MEMBER_ID])
    e_t = to_us(events[OCCURRED_AT])
    etype = events["type"]
    before = e_t < T
    if types is None:
        types = sorted(map(str, etype[before].unique()))
    tcode = np.full(len(events), -1, dtype=np.int8 if len(types) < 127 else np.int32)
    for i, ty in enumerate(types):  # one Arrow comparison per rule type: no per-row strings
        tcode[(etype == ty).to_numpy(dtype=bool, na_value=False)] = i
    idx = np.flatnonzero(before & (tcode >= 0))
    del before
    value = np.full(len(events), np.nan)
    if "value" in events.columns:
        value[idx] = pd.to_numeric(events["value"].take(idx), errors="coerce").to_numpy(dtype=np.float64,
                                                                                       na_value=np.nan)
    item = np.full(len(events), -1, dtype=np.int64)
    if ITEM_ID in events.columns:
        item[idx] = _codes(events[ITEM_ID].take(idx))[0]
    return {"m": e_m, "t": e_t, "type": tcode, "value": value, "item": item}, e_uniq, types


def prepare(orders: pd.DataFrame, events: pd.DataFrame | None, members: pd.DataFrame | None, as_of: object,
            event_types: set[str] | None = None, category_bonus: dict[str, int] | None = None) -> Inputs:
    """Validate and normalise the three tables for one as-of date.

    This is the DataFrame front of `loyalty.arrays.prepare_arrays`: it checks the contract columns, codes member,
    order and item ids (pandas/Arrow factorize; member codes = positions in the sorted ids of the three tables),
    turns statuses, event types, birthdays and times into the arrays `prepare_arrays` takes, and leaves the rules'
    normalisation (as-of cut, integer cents, refunds, negative amounts, duplicate rows, first events, the member
    population) to it, so those rules live in one place for both paths.

    `event_types`: the event types the rules use (others only make their member known; None: every type present
    before as_of); `category_bonus`: category → flat bonus points per paid line (computed here so category strings
    never leave Arrow). The orders and the events are independent until member codes are joined: on big tables
    they are coded in two threads (Arrow hashing and numpy release the GIL).
    """
    from loyalty.arrays import prepare_arrays  # here, not at the top: loyalty.arrays builds on this module

    T = as_of_us(as_of)
    _require(orders, "orders", [ORDER_ID, MEMBER_ID, ORDERED_AT, "amount"])
    _no_nulls(orders, "orders", [ORDER_ID, MEMBER_ID, ORDERED_AT])
    has_events = events is not None and len(events) > 0
    if has_events:
        _require(events, "events", [MEMBER_ID, OCCURRED_AT, "type"])
    types = sorted(event_types) if event_types is not None else None
    ev: dict[str, np.ndarray] | None = None
    e_uniq = pd.Index([], dtype="string")
    if has_events and len(orders) + len(events) >= _PARALLEL_ROWS:
        with ThreadPoolExecutor(max_workers=2) as pool:  # three jobs of similar size on two cores
            oj = pool.submit(_codes, orders[ORDER_ID])
            ej = pool.submit(_events_part, events, T, types)
            lines, o_uniq = _orders_part(orders, category_bonus, order_codes=oj)
            ev, e_uniq, types = ej.result()
    else:
        lines, o_uniq = _orders_part(orders, category_bonus)
        if has_events:
            ev, e_uniq, types = _events_part(events, T, types)
    if types is None:  # no events at all
        types = []

    # members who had joined before as_of (or whose joined_at is unknown)
    mem: dict[str, np.ndarray] | None = None
    m_ids = pd.Index([], dtype="string")
    if members is not None and len(members):
        _require(members, "members", [MEMBER_ID])
        _no_nulls(members, "members", [MEMBER_ID])
        rows = members
        if "joined_at" in rows.columns:
            rows = rows.loc[to_us(rows["joined_at"]) < T]  # NaT is NO_TIME: kept
        m_ids = pd.Index(rows[MEMBER_ID].astype("string"))
        birth_month = (pd.to_datetime(rows["birthday"], errors="coerce").dt.month
                       .to_numpy(dtype=np.float64, na_value=0).astype(np.int8)
                       if "birthday" in rows.columns else np.zeros(len(rows), dtype=np.int8))
        joined = (to_us(rows["joined_at"]) if "joined_at" in rows.columns
                  else np.full(len(rows), NO_TIME, dtype=np.int64))
        mem = {"m": m_ids, "birth_month": birth_month, "joined": joined}

    # member codes: positions in the sorted ids of the three tables (prepare_arrays drops those without a row
    # before as_of)
    member_ids = o_uniq.append(e_uniq).append(m_ids).unique()
    member_ids = pd.Index(member_ids.sort_values(), dtype="string", name=MEMBER_ID)
    lines["m"] = member_ids.get_indexer(o_uniq).astype(np.int64).take(lines["m"])
    if ev is not None:
        ev["m"] = member_ids.get_indexer(e_uniq).astype(np.int64).take(ev["m"])
    if mem is not None:
        mem["m"] = member_ids.get_indexer(m_ids).astype(np.int64)
    return prepare_arrays(member_ids, lines, ev, mem, as_of, types)
