"""Input checks and normalisation: contract frames → integer arrays the engine works on.

Only rows strictly before `as_of` are used (point-in-time). Exact duplicate rows count once (idempotent replays).
Member ids are coded in sorted order so every result is independent of row order. Amounts become integer cents.
String columns are never turned into Python objects row by row (20M-row stores): they are factorised or compared
in Arrow, then everything downstream is integer arrays.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

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


def _mix(h: np.ndarray, col: np.ndarray) -> np.ndarray:
    """Fold one column into a 64-bit row hash (splitmix64 finaliser)."""
    x = h ^ (np.ascontiguousarray(col).view(np.uint64) + np.uint64(0x9E3779B97F4A7C15))
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def duplicate_rows(cols: list[np.ndarray]) -> np.ndarray:
    """Mask of rows equal (in every column) to an earlier row: a 64-bit hash finds candidates in one O(n) pass,
    then candidates are compared exactly (so a hash collision never drops a row)."""
    n = len(cols[0])
    if n == 0:
        return np.zeros(0, dtype=bool)
    with np.errstate(over="ignore"):
        h = np.zeros(n, dtype=np.uint64)
        for c in cols:
            h = _mix(h, np.asarray(c).astype(np.int64, copy=False) if np.asarray(c).dtype == bool else np.asarray(c))
    cand = pd.Series(h).duplicated(keep=False).to_numpy()
    out = np.zeros(n, dtype=bool)
    if cand.any():
        idx = np.flatnonzero(cand)
        sub = pd.DataFrame({i: np.asarray(c)[idx] for i, c in enumerate(cols)})
        out[idx[sub.duplicated().to_numpy()]] = True
    return out


@dataclass(frozen=True)
class Inputs:
    """Normalised inputs. Member codes index `member_ids` (sorted). Times are int64 µs."""

    as_of: int
    member_ids: pd.Index
    lines: pd.DataFrame     # m, t, order, item, cents, known, refund, bonus (order rows before as_of, deduplicated)
    events: pd.DataFrame    # m, t, type (categorical of the rule types), value (event rows before as_of, deduplicated)
    birth_month: np.ndarray  # per member: 1..12, 0 unknown
    joined: np.ndarray       # per member: µs, NO_TIME unknown
    first_event: np.ndarray  # per member: first event of any type before as_of (µs), NO_TIME when none
    duplicates: dict[str, int]

    @property
    def n_members(self) -> int:
        return len(self.member_ids)


def _codes(col: pd.Series) -> tuple[np.ndarray, pd.Index]:
    codes, uniq = pd.factorize(col)
    return codes.astype(np.int64), pd.Index(uniq, dtype="string")


def prepare(orders: pd.DataFrame, events: pd.DataFrame | None, members: pd.DataFrame | None, as_of: object,
            event_types: set[str] | None = None, category_bonus: dict[str, int] | None = None) -> Inputs:
    """Validate and normalise the three tables for one as-of date.

    `event_types`: the event types the rules use (others only make their member known); `category_bonus`:
    category → flat bonus points per paid line (computed here so category strings never leave Arrow).
    """
    T = as_of_us(as_of)
    _require(orders, "orders", [ORDER_ID, MEMBER_ID, ORDERED_AT, "amount"])
    _no_nulls(orders, "orders", [ORDER_ID, MEMBER_ID, ORDERED_AT])
    has_events = events is not None and len(events) > 0
    if has_events:
        _require(events, "events", [MEMBER_ID, OCCURRED_AT, "type"])
    # hashing the id strings is most of the work on big stores: Arrow releases the GIL, so two threads overlap it
    with ThreadPoolExecutor(max_workers=2) as pool:
        jobs = {"o_m": pool.submit(_codes, orders[MEMBER_ID]), "o_order": pool.submit(_codes, orders[ORDER_ID])}
        if ITEM_ID in orders.columns:
            jobs["o_item"] = pool.submit(_codes, orders[ITEM_ID])
        if has_events:
            jobs["e_m"] = pool.submit(_codes, events[MEMBER_ID])
        codes = {k: f.result() for k, f in jobs.items()}
    o_t = to_us(orders[ORDERED_AT])
    keep = o_t < T
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
    o_m, o_uniq = codes["o_m"]
    o_order, _ = codes["o_order"]
    o_item = codes["o_item"][0] if "o_item" in codes else np.full(len(orders), -1, np.int64)
    qty = (pd.to_numeric(orders["quantity"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
           if "quantity" in orders.columns else np.ones(len(orders)))
    known = ~np.isnan(amount)
    cents = np.where(known, np.round(np.nan_to_num(amount) * 100.0), 0).astype(np.int64)
    if not keep.all():
        o_t, o_m, o_order, o_item, cents, known, refund, bonus, qty = (
            a[keep] for a in (o_t, o_m, o_order, o_item, cents, known, refund, bonus, qty))
    dup = duplicate_rows([o_m, o_t, o_order, o_item, cents, known, refund, qty, bonus])
    n_dup = int(dup.sum())
    if n_dup:
        o_t, o_m, o_order, o_item, cents, known, refund, bonus = (
            a[~dup] for a in (o_t, o_m, o_order, o_item, cents, known, refund, bonus))
    o_present = np.bincount(o_m, minlength=len(o_uniq)) > 0

    # events: every event before as_of makes its member known; only the rule types are kept as rows
    types = sorted(event_types) if event_types is not None else None
    if has_events:
        _no_nulls(events, "events", [MEMBER_ID, OCCURRED_AT, "type"])
        e_t = to_us(events[OCCURRED_AT])
        ekeep = e_t < T
        e_m, e_uniq = codes["e_m"]
        e_present = np.bincount(e_m[ekeep], minlength=len(e_uniq)) > 0
        first_event = np.full(len(e_uniq), np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first_event, e_m[ekeep], e_t[ekeep])
        etype = events["type"]
        if types is not None:  # one Arrow comparison per rule type: no per-row strings
            tcode = np.full(len(events), -1, dtype=np.int8)
            for i, ty in enumerate(types):
                tcode[(etype == ty).to_numpy(dtype=bool, na_value=False)] = i
            tkeep = ekeep & (tcode >= 0)
            e_type = pd.Categorical.from_codes(tcode[tkeep], categories=types)
        else:
            tkeep = ekeep
            e_type = pd.Categorical(etype[tkeep].astype("string"))
        e_value = (pd.to_numeric(events["value"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
                   if "value" in events.columns else np.full(len(events), np.nan))[tkeep]
        e_item = (_codes(events[ITEM_ID][tkeep])[0] if ITEM_ID in events.columns
                  else np.full(int(np.count_nonzero(tkeep)), -1, dtype=np.int64))
        e_t, e_m = e_t[tkeep], e_m[tkeep]
    else:
        e_t = np.zeros(0, dtype=np.int64)
        e_m = np.zeros(0, dtype=np.int64)
        e_uniq = pd.Index([], dtype="string")
        e_present = np.zeros(0, dtype=bool)
        e_type = pd.Categorical([], categories=types)
        e_value = np.zeros(0)
        e_item = np.zeros(0, dtype=np.int64)
        first_event = np.zeros(0, dtype=np.int64)

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

    member_ids = pd.Index(o_uniq[o_present]).append(pd.Index(e_uniq[e_present])).append(m_ids).unique()
    member_ids = pd.Index(member_ids.sort_values(), dtype="string", name=MEMBER_ID)
    o_map = member_ids.get_indexer(o_uniq).astype(np.int64)
    e_map = member_ids.get_indexer(e_uniq).astype(np.int64)
    lines = pd.DataFrame({"m": o_map[o_m], "t": o_t, "order": o_order, "item": o_item, "cents": cents,
                          "known": known, "refund": refund, "bonus": bonus})

    ev = pd.DataFrame({"m": e_map[e_m] if len(e_m) else e_m, "t": e_t, "type": e_type, "value": e_value})
    edup = duplicate_rows([ev["m"].to_numpy(), e_t, np.asarray(e_type.codes, dtype=np.int64), e_value, e_item])
    n_edup = int(edup.sum())
    if n_edup:
        ev = ev.loc[~edup].reset_index(drop=True)

    n = len(member_ids)
    birth_month = np.zeros(n, dtype=np.int8)
    joined = np.full(n, NO_TIME, dtype=np.int64)
    first_seen_event = np.full(n, NO_TIME, dtype=np.int64)
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
                  first_event=first_seen_event, duplicates={"orders": n_dup, "events": n_edup})
