"""Prepared loyalty inputs from integer arrays, without pandas string columns: the one place the rules' input
normalisation lives.

`prepare_arrays` takes the rows with every id already coded — one integer code per id, times as int64 µs — and
applies the normalisation the rules rely on: the as-of cut, amounts to integer cents (negative amounts rejected),
refunds from statuses, exact duplicate rows counted once, each member's first event, and the member population
(members without a row before as_of are dropped). Two callers code the ids: `loyalty.frames.prepare` from contract
DataFrames (pandas/Arrow factorize; it checks and codes the string columns, then calls this), and an engine such as
DuckDB while it scans the Parquet files (`features.loyalty_arrays`: no per-row strings on 20M-line stores). Their
`Inputs` differ only in how order and item codes are numbered, which no rule depends on (codes only group and
match lines).

Contract of the arrays (order and event rows at or after `as_of` are dropped here; member rows must be those who
joined before `as_of` or at an unknown time):
- `member_ids`: sorted (string order); member codes index it; ids without any row before `as_of` are dropped.
- orders: `m` (member code), `t` (µs), `order` and `item` (dense codes ≥ 0; item -1 = no item; equal ids ⇔ equal
  codes), `amount` (float, NaN unknown), `qty` (float), `status` (0 paid, 1 refunded, 2 cancelled), `bonus`
  (category bonus points of the line).
- events: `m`, `t`, `type` (code into `event_types`, -1: a type the rules do not read), `value`, `item`.
- members: `m`, `birth_month` (1..12, 0 unknown), `joined` (µs, `NO_TIME` unknown).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from features.contract import MEMBER_ID
from loyalty.frames import NO_TIME, Inputs, LoyaltyInputError, as_of_us, duplicate_rows

#: status codes of the `status` array (the contract's STATUSES in order)
PAID, REFUNDED, CANCELLED = 0, 1, 2


def _i64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.int64)


def _take_all(cols: dict[str, np.ndarray], keep: np.ndarray) -> None:
    """Keep rows `keep` (bool mask) in every column, in place, one column at a time (peak: one extra column)."""
    idx = np.flatnonzero(keep)
    for k in list(cols):
        cols[k] = cols[k].take(idx)


def prepare_arrays(member_ids: pd.Index | Sequence[str], orders: Mapping[str, np.ndarray],
                   events: Mapping[str, np.ndarray] | None, members: Mapping[str, np.ndarray] | None,
                   as_of: object, event_types: Sequence[str]) -> Inputs:
    """`Inputs` for the rules from coded arrays (see the module docstring for the contract). The `orders` arrays
    are moved (popped from a dict argument as they are converted)."""
    T = as_of_us(as_of)
    ids = pd.Index(member_ids, dtype="string", name=MEMBER_ID)
    n = len(ids)
    # -- order lines (each input array is dropped once converted: peak memory is one extra column) -------------
    orders = dict(orders) if not isinstance(orders, dict) else orders
    amount = np.asarray(orders.pop("amount"), dtype=np.float64)
    neg = int((amount < 0).sum())
    if neg:
        raise LoyaltyInputError(f"orders.amount: {neg} negative value(s); amounts are paid (or given back) and ≥ 0")
    known = ~np.isnan(amount)
    cols: dict[str, np.ndarray] = {}
    for name in ("m", "t", "order", "item"):
        cols[name] = _i64(orders.pop(name))
    cols["cents"] = np.where(known, np.round(np.nan_to_num(amount) * 100.0), 0).astype(np.int64)
    del amount
    cols["known"] = known
    status = np.asarray(orders.pop("status"))
    cols["refund"] = (status == REFUNDED) | (status == CANCELLED)
    del status, known
    cols["bonus"] = _i64(orders.pop("bonus"))
    cols["qty"] = np.asarray(orders.pop("qty"), dtype=np.float64)
    if len(cols["m"]) and (int(cols["m"].min()) < 0 or int(cols["m"].max()) >= n):
        raise LoyaltyInputError("orders: member codes outside member_ids")
    late = cols["t"] >= T
    if late.any():
        _take_all(cols, ~late)
    del late
    dup = duplicate_rows(list(cols.values()))
    n_dup = int(dup.sum())
    if n_dup:
        _take_all(cols, ~dup)
    del dup, cols["qty"]  # only part of what makes two lines the same line
    # -- events -------------------------------------------------------------------------------------------------
    types = list(event_types)
    first_event = np.full(n, NO_TIME, dtype=np.int64)
    if events is not None and len(events["m"]):
        e_m, e_t = _i64(events["m"]), _i64(events["t"])
        if int(e_m.min()) < 0 or int(e_m.max()) >= n:
            raise LoyaltyInputError("events: member codes outside member_ids")
        ekeep = e_t < T
        first = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first, e_m, np.where(ekeep, e_t, np.iinfo(np.int64).max))
        seen = first < np.iinfo(np.int64).max
        first_event[seen] = first[seen]
        tcode = np.asarray(events["type"], dtype=np.int64)
        idx = np.flatnonzero(ekeep & (tcode >= 0))
        ev_cols = [e_m.take(idx), e_t.take(idx), tcode.take(idx),
                   np.asarray(events["value"], dtype=np.float64).take(idx), _i64(events["item"]).take(idx)]
        del e_m, e_t, tcode, idx
    else:
        ev_cols = [np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0),
                   np.zeros(0, np.int64)]
    edup = duplicate_rows(ev_cols)
    n_edup = int(edup.sum())
    if n_edup:
        keep = np.flatnonzero(~edup)
        ev_cols = [c.take(keep) for c in ev_cols]
    ev = {"m": ev_cols[0], "t": ev_cols[1],
          "type": pd.Categorical.from_codes(ev_cols[2].astype(np.int8 if len(types) < 127 else np.int64),
                                            categories=types),
          "value": ev_cols[3]}
    # -- members ------------------------------------------------------------------------------------------------
    birth_month = np.zeros(n, dtype=np.int8)
    joined = np.full(n, NO_TIME, dtype=np.int64)
    if members is not None and len(members["m"]):
        mm = _i64(members["m"])
        if int(mm.min()) < 0 or int(mm.max()) >= n:
            raise LoyaltyInputError("members: member codes outside member_ids")
        birth_month[mm] = np.asarray(members["birth_month"]).astype(np.int8)
        joined[mm] = _i64(members["joined"])
    # members with no row at all are not evaluated (as `prepare`, which only knows members from their rows)
    present = np.bincount(cols["m"], minlength=n) > 0
    present |= first_event != NO_TIME
    if members is not None and len(members["m"]):
        present[_i64(members["m"])] = True
    if not present.all():
        new_code = np.cumsum(present) - 1
        ids = ids[present]
        cols["m"] = new_code.take(cols["m"])
        ev["m"] = new_code.take(ev["m"])
        birth_month, joined, first_event = birth_month[present], joined[present], first_event[present]
    return Inputs(as_of=T, member_ids=ids, lines=cols, events=ev, birth_month=birth_month, joined=joined,
                  first_event=first_event, duplicates={"orders": n_dup, "events": n_edup})


__all__ = ["CANCELLED", "PAID", "REFUNDED", "prepare_arrays"]
