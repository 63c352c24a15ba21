"""Input checks and normalisation: contract frames → integer arrays the engine works on.

Only rows strictly before `as_of` are used (point-in-time). Exact duplicate rows count once (idempotent replays):
a 64-bit row hash and one sort find candidate duplicates, which are then compared exactly. Member ids are coded in
sorted order so every result is independent of row order. Amounts become integer cents. String columns are never
turned into Python objects row by row (20M-row stores): they are factorised or compared in Arrow, then everything
downstream is integer arrays (plain dicts of numpy columns, no DataFrame consolidation copies). Orders and events
are prepared in two threads on big inputs.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.contract import ITEM_ID, MEMBER_ID, OCCURRED_AT, ORDER_ID, ORDERED_AT, STATUSES

PAID = "paid"
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
            raise LoyaltyInputError(f"{table}.{c}: {n} null value(s); this column is required (ingest quarantines such rows)")


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


def _orders_part(orders: pd.DataFrame, T: int, category_bonus: dict[str, int] | None,
                 order_codes: Future | None = None) -> dict:
    """Order lines before T as integer arrays (member codes local to `o_uniq`), deduplicated. `order_codes`: the
    order-id codes being computed in another thread (the largest hashing job), else computed here."""
    o_m, o_uniq = _codes(orders[MEMBER_ID])
    o_item = _codes(orders[ITEM_ID])[0] if ITEM_ID in orders.columns else np.full(len(orders), -1, np.int64)
    o_t = to_us(orders[ORDERED_AT])
    amount = pd.to_numeric(orders["amount"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad_amount = orders["amount"].notna().to_numpy() & np.isnan(amount)
    if bad_amount.any():
        raise LoyaltyInputError(f"orders.amount: {int(bad_amount.sum())} value(s) are not numbers")
    neg = int((amount < 0).sum())
    if neg:
        raise LoyaltyInputError(f"orders.amount: {neg} negative value(s); amounts are paid (or given back) and ≥ 0")
    if "status" in orders.columns:
        st = orders["status"]
        refund = st.isin(["refunded", "cancelled"]).to_numpy(dtype=bool)
        bad = ~(st.isin(list(STATUSES)).to_numpy(dtype=bool) | st.isna().to_numpy())
        if bad.any():
            raise LoyaltyInputError(f"orders.status: unknown value(s) {sorted(map(str, st[bad].unique()))[:5]}; "
                                    f"allowed: {list(STATUSES)}")
    else:
        refund = np.zeros(len(orders), dtype=bool)
    bonus = np.zeros(len(orders), dtype=np.int64)
    if category_bonus and "category" in orders.columns:
        for cat, pts in category_bonus.items():
            bonus += np.where((orders["category"] == cat).to_numpy(dtype=bool, na_value=False), pts, 0)
    qty = (pd.to_numeric(orders["quantity"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
           if "quantity" in orders.columns else np.ones(len(orders)))
    known = ~np.isnan(amount)
    cents = np.where(known, np.round(np.nan_to_num(amount) * 100.0), 0).astype(np.int64)
    o_order = order_codes.result()[0] if order_codes is not None else _codes(orders[ORDER_ID])[0]
    cols = {"m": o_m, "t": o_t, "order": o_order, "item": o_item, "cents": cents, "known": known, "refund": refund,
            "bonus": bonus, "qty": qty}
    del o_m, o_order, o_item, amount, cents, known, refund, bonus, qty, bad_amount  # memory: only `cols` holds them
    keep = o_t < T
    del o_t
    if not keep.all():
        idx = np.flatnonzero(keep)
        for k in list(cols):  # one column at a time: peak memory is one extra column, not a second table
            cols[k] = cols[k].take(idx)
        del idx
    dup = duplicate_rows(list(cols.values()))
    n_dup = int(dup.sum())
    if n_dup:
        idx = np.flatnonzero(~dup)
        for k in list(cols):
            cols[k] = cols[k].take(idx)
    del cols["qty"]  # only part of what makes two lines the same line
    present = np.bincount(cols["m"], minlength=len(o_uniq)) > 0
    return {"cols": cols, "uniq": o_uniq, "present": present, "n_dup": n_dup}


def _events_part(events: pd.DataFrame | None, T: int, types: list[str] | None) -> dict:
    """Events before T: which members they make known (and their first event), and the rule-type rows
    (member codes local to `e_uniq`)."""
    if events is None or not len(events):
        return {"m": np.zeros(0, dtype=np.int64), "t": np.zeros(0, dtype=np.int64),
                "uniq": pd.Index([], dtype="string"), "present": np.zeros(0, dtype=bool),
                "type": pd.Categorical([], categories=types), "value": np.zeros(0), "item": np.zeros(0, np.int64),
                "first": np.zeros(0, dtype=np.int64)}
    _no_nulls(events, "events", [MEMBER_ID, OCCURRED_AT, "type"])
    e_m, e_uniq = _codes(events[MEMBER_ID])
    e_t = to_us(events[OCCURRED_AT])
    ekeep = e_t < T
    first_event = np.full(len(e_uniq), np.iinfo(np.int64).max, dtype=np.int64)
    if ekeep.all():
        np.minimum.at(first_event, e_m, e_t)
    else:  # events at/after T never win the minimum (memory: no filtered copies of two 8-byte columns)
        np.minimum.at(first_event, e_m, np.where(ekeep, e_t, np.iinfo(np.int64).max))
    present = first_event < np.iinfo(np.int64).max  # some event before T
    etype = events["type"]
    if types is not None:  # one Arrow comparison per rule type: no per-row strings
        tcode = np.full(len(events), -1, dtype=np.int8)
        for i, ty in enumerate(types):
            tcode[(etype == ty).to_numpy(dtype=bool, na_value=False)] = i
        tkeep = ekeep & (tcode >= 0)
        idx = np.flatnonzero(tkeep)
        e_type = pd.Categorical.from_codes(tcode.take(idx), categories=types)
    else:
        idx = np.flatnonzero(ekeep)
        e_type = pd.Categorical(etype.take(idx).astype("string"))
    e_value = (pd.to_numeric(events["value"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan).take(idx)
               if "value" in events.columns else np.full(len(idx), np.nan))
    e_item = (_codes(events[ITEM_ID].take(idx))[0] if ITEM_ID in events.columns
              else np.full(len(idx), -1, dtype=np.int64))
    return {"m": e_m.take(idx), "t": e_t.take(idx), "uniq": e_uniq, "present": present, "type": e_type,
            "value": e_value, "item": e_item, "first": first_event}


def prepare(orders: pd.DataFrame, events: pd.DataFrame | None, members: pd.DataFrame | None, as_of: object,
            event_types: set[str] | None = None, category_bonus: dict[str, int] | None = None) -> Inputs:
    """Validate and normalise the three tables for one as-of date.

    `event_types`: the event types the rules use (others only make their member known); `category_bonus`:
    category → flat bonus points per paid line (computed here so category strings never leave Arrow).
    The orders and the events are independent until member codes are joined: on big tables they are prepared in
    two threads (Arrow hashing and numpy release the GIL).
    """
    T = as_of_us(as_of)
    _require(orders, "orders", [ORDER_ID, MEMBER_ID, ORDERED_AT, "amount"])
    _no_nulls(orders, "orders", [ORDER_ID, MEMBER_ID, ORDERED_AT])
    has_events = events is not None and len(events) > 0
    if has_events:
        _require(events, "events", [MEMBER_ID, OCCURRED_AT, "type"])
    types = sorted(event_types) if event_types is not None else None
    if has_events and len(orders) + len(events) >= _PARALLEL_ROWS:
        with ThreadPoolExecutor(max_workers=2) as pool:  # three jobs of similar size on two cores
            oj = pool.submit(_codes, orders[ORDER_ID])
            ej = pool.submit(_events_part, events, T, types)
            op = _orders_part(orders, T, category_bonus, order_codes=oj)
            ep = ej.result()
    else:
        op = _orders_part(orders, T, category_bonus)
        ep = _events_part(events if has_events else None, T, types)

    # members who had joined before as_of (or whose joined_at is unknown)
    if members is not None and len(members):
        _require(members, "members", [MEMBER_ID])
        _no_nulls(members, "members", [MEMBER_ID])
        mem = members
        if "joined_at" in mem.columns:
            mem = mem.loc[to_us(mem["joined_at"]) < T]  # NaT is NO_TIME: kept
        m_ids = pd.Index(mem[MEMBER_ID].astype("string"))
    else:
        mem = None
        m_ids = pd.Index([], dtype="string")

    o_uniq, e_uniq = op["uniq"], ep["uniq"]
    member_ids = pd.Index(o_uniq[op["present"]]).append(pd.Index(e_uniq[ep["present"]])).append(m_ids).unique()
    member_ids = pd.Index(member_ids.sort_values(), dtype="string", name=MEMBER_ID)
    o_map = member_ids.get_indexer(o_uniq).astype(np.int64)
    e_map = member_ids.get_indexer(e_uniq).astype(np.int64)
    lines = dict(op["cols"])
    lines["m"] = o_map.take(lines["m"])
    e_m = e_map.take(ep["m"]) if len(ep["m"]) else ep["m"]
    e_type = ep["type"]
    ev = {"m": e_m, "t": ep["t"], "type": e_type, "value": ep["value"]}
    edup = duplicate_rows([e_m, ep["t"], np.asarray(e_type.codes, dtype=np.int64), ep["value"], ep["item"]])
    n_edup = int(edup.sum())
    if n_edup:
        keep = np.flatnonzero(~edup)
        ev = {k: (v.take(keep) if isinstance(v, np.ndarray) else v[keep]) for k, v in ev.items()}

    n = len(member_ids)
    birth_month = np.zeros(n, dtype=np.int8)
    joined = np.full(n, NO_TIME, dtype=np.int64)
    first_seen_event = np.full(n, NO_TIME, dtype=np.int64)
    first_event, e_present = ep["first"], ep["present"]
    seen = e_present & (first_event < np.iinfo(np.int64).max) if len(first_event) else e_present
    first_seen_event[e_map[seen]] = first_event[seen]
    if mem is not None and len(mem):
        codes = member_ids.get_indexer(m_ids)
        if "birthday" in mem.columns:
            bm = pd.to_datetime(mem["birthday"], errors="coerce").dt.month.to_numpy(dtype=np.float64, na_value=0)
            birth_month[codes] = bm.astype(np.int8)
        if "joined_at" in mem.columns:
            joined[codes] = to_us(mem["joined_at"])
    return Inputs(as_of=T, member_ids=member_ids, lines=lines, events=ev, birth_month=birth_month, joined=joined,
                  first_event=first_seen_event, duplicates={"orders": op["n_dup"], "events": n_edup})
