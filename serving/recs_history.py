"""One member's item-history summary for the recommender without pandas groupbys (the inline-history path).

The served recs model describes a member by `summarise_history(orders, events, as_of)` (in the model's bundled
`member_pyfunc/recs.py`): one row per item with purchase counts, first/last times, spend, event counts and decayed
counts. For one member's inline history its pandas groupbys, merge, pivot and join cost ~20 ms of CPU per request for
a few hundred rows. `summarise_one` computes the same frame with a few passes over plain lists:

- the same rows: item lines strictly before `as_of`, paid lines whose (order, item) has a refund/cancellation row
  removed, item events of type view / cart / favorite;
- the same arithmetic: group sums as pandas 3.1 computes them (`np.add.reduceat` when the rows are grouped and no
  value is NaN, else its Kahan-compensated kernel in row order: `_group_sums`); decay weights are the same numpy
  expressions over the same arrays; the same row order (first appearance of each item, or item-sorted when the
  history has events, as `DataFrame.join(how="outer")` gives) and the same dtypes.

The window: the ranker is trained on `summarise_history(..., window_days=HISTORY_DAYS)` and batch / member_id
answers read the online `recent_items` table over the same 365 days (features/definitions/recent_items.py
RECENT_ITEMS_DAYS), so `FastSummary(window_days=…)` keeps an inline history's rows in [as_of − window, as_of) too
(tests/test_recs_history_parity.py: an inline full history gets the member_id answer).

Equality is not assumed: `FastSummary.for_model` runs both on probe histories that exercise every rule (refunds,
duplicate lines, missing amounts, event-only items, rows at `as_of`) when the model is loaded and uses the fast path
only if the frames are identical, restricted to the columns that model's own function returns (models logged with
an older `recs.py` have fewer). Inputs the fast path does not cover (several members, other dtypes, histories over
`max_rows` rows, events without item events) go to the model's own function. Tests compare both on generated data.
"""
from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger("member_ml.serving.recs_history")

#: output columns in order (the current `recs.summarise_history`: HISTORY_REQUIRED + HISTORY_OPTIONAL)
COLUMNS: tuple[str, ...] = ("member_id", "item_id", "n_bought", "last_bought_at", "first_bought_at", "last_seen_at",
                            "n_view", "n_cart", "n_favorite", "spend", "n_bought_hl14", "n_bought_hl56",
                            "n_view_hl1", "n_cart_hl1")
_BUY_DECAY = (("n_bought_hl14", 14.0), ("n_bought_hl56", 56.0))
_EVENT_DECAY = (("n_view_hl1", "view", 1.0), ("n_cart_hl1", "cart", 1.0))
_EVENT_TYPES = ("view", "cart", "favorite")
_US = np.dtype("datetime64[us]")
MAX_ROWS = 5000  # order lines + events above which the pandas path is as fast (and list passes would not be)


def _group_sums(keys: list[int], values: list[float], n_groups: int) -> list[float]:
    """pandas' groupby sum of `values` by group `keys` (row order), the way pandas 3.1 dispatches it: when the keys
    are non-decreasing and no value is NaN, `np.add.reduceat` over the segments; otherwise the Cython kernel's
    Kahan-compensated sum per group in row order, NaN skipped (an all-NaN group sums to 0.0)."""
    if not keys:
        return [0.0] * n_groups
    if all(a <= b for a, b in zip(keys, keys[1:])) and not any(v != v for v in values):
        starts = [0] + [j for j in range(1, len(keys)) if keys[j] != keys[j - 1]]
        seg = np.add.reduceat(np.asarray(values, dtype=np.float64), starts).tolist() if keys else []
        out = [0.0] * n_groups
        for j, st in enumerate(starts):
            out[keys[st]] = seg[j]
        return out
    s = [0.0] * n_groups
    c = [0.0] * n_groups
    for k, x in zip(keys, values):
        if x != x:
            continue
        y = x - c[k]
        t = s[k] + y
        ck = t - s[k] - y
        c[k] = 0.0 if ck != ck else ck
        s[k] = t
    return s


def _unsupported(orders: pd.DataFrame, events: pd.DataFrame | None, max_rows: int) -> str | None:
    """Why the fast path does not take these frames (None: it does)."""
    need = ("member_id", "order_id", "ordered_at", "item_id", "status", "amount")
    if any(c not in orders.columns for c in need) or orders["ordered_at"].dtype != _US:
        return "orders columns"
    n = len(orders) + (0 if events is None else len(events))
    if n > max_rows:
        return "too many rows"
    if not all(isinstance(orders[c].dtype, pd.StringDtype) for c in ("member_id", "order_id", "item_id", "status")):
        return "orders string dtypes"
    if events is not None and len(events):
        if any(c not in events.columns for c in ("member_id", "occurred_at", "type", "item_id")):
            return "events columns"
        if events["occurred_at"].dtype != _US or not all(
                isinstance(events[c].dtype, pd.StringDtype) for c in ("member_id", "type", "item_id")):
            return "events dtypes"
    return None


def summarise_one(orders: pd.DataFrame, events: pd.DataFrame | None, as_of: pd.Timestamp,
                  max_rows: int = MAX_ROWS, window_days: int | None = None) -> pd.DataFrame | None:
    """`recs.summarise_history(orders, events, as_of, window_days=window_days)` for the rows of one member (every
    column of COLUMNS), or None when the input is outside what this path reproduces (the caller then uses the
    model's own function). `window_days` keeps rows in [as_of − window_days, as_of), as the reference does."""
    if _unsupported(orders, events, max_rows) is not None:
        return None
    t_end = np.datetime64(pd.Timestamp(as_of).to_datetime64(), "us")
    end_us = int(t_end.astype("int64"))
    start_us = np.iinfo("int64").min if window_days is None else int(
        np.datetime64((pd.Timestamp(as_of) - pd.Timedelta(days=int(window_days))).to_datetime64(), "us")
        .astype("int64"))
    o_item = orders["item_id"].tolist()
    o_at = orders["ordered_at"].to_numpy(dtype=_US).astype("int64").tolist()
    o_order = orders["order_id"].tolist()
    o_status = orders["status"].tolist()
    o_amount = orders["amount"].to_numpy(dtype=float, na_value=np.nan).tolist()
    o_member = orders["member_id"].tolist()
    members = set()
    keep = []  # item lines before as_of: (order, item, at, status, amount)
    for it, at, od, st, am, mb in zip(o_item, o_at, o_order, o_status, o_amount, o_member):
        if not isinstance(it, str) or at >= end_us or at < start_us:
            continue
        if not isinstance(od, str):
            return None  # pandas merges null keys with null keys: not reproduced here
        members.add(mb)
        st = st if isinstance(st, str) else "paid"
        keep.append((od, it, at, st, am))
    undone = {(od, it) for od, it, _, st, _ in keep if st != "paid"}
    paid = [r for r in keep if r[3] == "paid" and (r[0], r[1]) not in undone]

    # per item, in first-appearance order (the groupby(sort=False) order): lines and distinct (item, order) rows
    pos: dict[str, int] = {}
    b_items: list[str] = []
    line_key: list[int] = []
    b_first: list[int] = []
    b_last: list[int] = []
    seen_orders: set[tuple[str, str]] = set()
    d_key: list[int] = []  # the distinct rows (first line of each item and order), in row order
    d_at: list[int] = []
    for od, it, at, _, _ in paid:
        k = pos.get(it)
        if k is None:
            k = pos[it] = len(b_items)
            b_items.append(it)
            b_first.append(at)
            b_last.append(at)
        else:
            b_first[k] = min(b_first[k], at)
            b_last[k] = max(b_last[k], at)
        line_key.append(k)
        if (it, od) not in seen_orders:
            seen_orders.add((it, od))
            d_key.append(k)
            d_at.append(at)
    nb = len(b_items)
    amounts = [r[4] for r in paid]
    n_amounts = [0] * nb
    for k, am in zip(line_key, amounts):
        n_amounts[k] += am == am
    n_orders = [0] * nb
    for k in d_key:
        n_orders[k] += 1
    bought: dict[str, list[Any]] = {
        "n_bought": [float(x) for x in n_orders],
        "first_bought_at": b_first,
        "last_bought_at": b_last,
        # sum(min_count=1): NaN for an item whose amounts are all unknown
        "spend": [x if n else math.nan for x, n in zip(_group_sums(line_key, amounts, nb), n_amounts)],
    }
    # decay weights: the reference's numpy expression over the distinct rows' times
    age = (t_end - np.asarray(d_at, dtype="int64").astype(_US)) / np.timedelta64(1, "D")
    for col, half_life in _BUY_DECAY:
        bought[col] = _group_sums(d_key, np.exp2(-age / half_life).tolist(), nb)

    has_events = events is not None and len(events) > 0
    if not has_events:
        order = list(range(len(b_items)))
        items = b_items
        ev: dict[str, list[Any]] = {}
    else:
        e_item = events["item_id"].tolist()
        e_type = events["type"].tolist()
        e_at = events["occurred_at"].to_numpy(dtype=_US).astype("int64").tolist()
        e_member = events["member_id"].tolist()
        rows = []
        for it, ty, at, mb in zip(e_item, e_type, e_at, e_member):
            if isinstance(it, str) and isinstance(ty, str) and ty in _EVENT_TYPES and start_us <= at < end_us:
                rows.append((it, ty, at))
                members.add(mb)
        if not rows:
            return None  # pandas' pivot of no rows: left to the model's own function
        e_items = sorted({it for it, _, _ in rows})
        e_pos = {it: k for k, it in enumerate(e_items)}
        counts = {ty: [0.0] * len(e_items) for ty in _EVENT_TYPES}
        last_event: list[int | None] = [None] * len(e_items)
        e_key = [e_pos[it] for it, _, _ in rows]  # groupby(sort=True) codes, in row order
        for k, (_, ty, at) in zip(e_key, rows):
            counts[ty][k] += 1.0
            if last_event[k] is None or at > last_event[k]:
                last_event[k] = at
        ages = ((t_end - np.asarray([at for _, _, at in rows], dtype="int64").astype(_US))
                / np.timedelta64(1, "D"))
        types = np.asarray([ty for _, ty, _ in rows], dtype=object)
        ev = {"n_view": counts["view"], "n_cart": counts["cart"], "n_favorite": counts["favorite"],
              "last_event_at": last_event,
              **{col: _group_sums(e_key, np.where(types == what, np.exp2(-ages / hl), 0.0).tolist(), len(e_items))
                 for col, what, hl in _EVENT_DECAY}}
        items = sorted(set(b_items) | set(e_items))  # DataFrame.join(how="outer"): the sorted union
        order = [pos.get(it, -1) for it in items]
    if len(members) != 1 or not items:
        return None  # one member's history only (an empty summary is left to the model's own function)

    n = len(items)
    e_of = [] if not has_events else [e_pos.get(it, -1) for it in items]  # type: ignore[possibly-undefined]

    def take_b(col: str, fill: Any) -> list[Any]:
        vals = bought[col]
        return [vals[k] if k >= 0 else fill for k in order]

    def take_e(col: str, fill: Any) -> list[Any]:
        if not has_events:
            return [fill] * n
        vals = ev[col]
        return [vals[k] if k >= 0 else fill for k in e_of]

    nat = None
    last_b = take_b("last_bought_at", nat)
    last_e = take_e("last_event_at", nat)
    last_seen = [b if e is None else (e if b is None else max(b, e)) for b, e in zip(last_b, last_e)]
    member = next(iter(members)) if members else None

    def times(vals: list[Any]) -> np.ndarray:
        return np.asarray([np.iinfo("int64").min if v is None else v for v in vals], dtype="int64").view(_US)

    cols: dict[str, Any] = {
        "member_id": pd.array([member] * n, dtype="string"),
        "item_id": pd.array(items, dtype="string"),
        "n_bought": np.asarray(take_b("n_bought", 0.0), dtype=float),
        "last_bought_at": times(last_b),
        "first_bought_at": times(take_b("first_bought_at", nat)),
        # without events the reference joins a NaT column (nanoseconds), so its row-wise max is datetime64[ns]
        "last_seen_at": times(last_seen) if has_events else times(last_seen).astype("datetime64[ns]"),
        "n_view": np.asarray(take_e("n_view", 0.0), dtype=float),
        "n_cart": np.asarray(take_e("n_cart", 0.0), dtype=float),
        "n_favorite": np.asarray(take_e("n_favorite", 0.0), dtype=float),
        "spend": np.asarray(take_b("spend", math.nan), dtype=float),
        **{col: np.asarray(take_b(col, 0.0), dtype=float) for col, _ in _BUY_DECAY},
        # decayed event counts: 0 for items without such events, NaN for all when the history has no events
        **{col: np.asarray(take_e(col, 0.0 if has_events else math.nan), dtype=float) for col, _, _ in _EVENT_DECAY},
    }
    return pd.DataFrame(cols)


def probe_histories() -> list[tuple[pd.DataFrame, pd.DataFrame | None, pd.Timestamp]]:
    """Small one-member histories that exercise every rule of the summary (for the start-up check and tests)."""
    from features.contract import EVENTS, ORDERS, conform

    t = pd.Timestamp("2025-06-01 12:00")
    orders = pd.DataFrame({
        "order_id": ["o1", "o1", "o2", "o2", "o3", "o3", "o4", "o5", "o5", "o6", "o7", "o8"],
        "member_id": "p1",
        "ordered_at": pd.to_datetime(["2024-01-05 10:00", "2024-01-05 10:00", "2024-11-02 08:30", "2024-11-02 08:30",
                                      "2025-03-01 09:00", "2025-03-03 09:00", "2025-05-30 23:59", "2025-05-31 00:00",
                                      "2025-05-31 00:00", "2025-06-01 12:00", "2025-02-02 00:00", "2025-04-04 00:00"]),
        "amount": [12.5, 3.3, 99.99, np.nan, 45.0, 45.0, 0.1, 7.77, 7.77, 5.0, np.nan, 18.25],
        "item_id": ["m", "b", "c", "m", "d", "d", "b", "a", "a", "m", None, "f"],
        "category": "x",
        "status": ["paid", "paid", "paid", "paid", "paid", "refunded", "paid", "paid", "paid", "paid", "paid",
                   "cancelled"],
    })
    events = pd.DataFrame({
        "member_id": "p1",
        "occurred_at": pd.to_datetime(["2025-05-31 22:00", "2025-05-01 00:00", "2025-06-01 11:59", "2025-06-01 12:00",
                                       "2025-01-01 00:00", "2025-05-20 00:00", "2025-05-20 00:00", "2024-12-12 00:00",
                                       "2025-05-31 23:00"]),
        "type": ["view", "cart", "favorite", "view", "checkin", "view", "cart", "favorite", "view"],
        "item_id": ["m", "g", "c", "m", None, "h", "h", "b", "zz"],
    })
    o = conform(orders, ORDERS)
    e = conform(events, EVENTS)
    # rows grouped by item and no missing amount: pandas sums by `np.add.reduceat` instead of its Kahan kernel
    o_grouped = conform(orders.assign(amount=orders["amount"].fillna(1.05)).sort_values("item_id", kind="stable"),
                        ORDERS)
    e_grouped = conform(events.sort_values("item_id", kind="stable"), EVENTS)
    return [(o, e, t), (o, None, t), (o.iloc[:9].reset_index(drop=True), e.iloc[:4].reset_index(drop=True), t),
            (o, e, pd.Timestamp("2025-03-02")), (o_grouped, e_grouped, t), (o_grouped, None, t)]


@dataclass(frozen=True)
class FastSummary:
    """The model's `summarise_history` for one member over the last `window_days` before as_of (the window of the
    online `recent_items` table and of the ranker's training summary; None: all history): the fast path where it
    was checked equal, else the model's. A model whose `summarise_history` has no `window_days` (logged before
    training used the window) was trained on whole histories: it gets the whole inline history, as before."""

    reference: Callable[..., pd.DataFrame]
    columns: tuple[str, ...] | None  # the model's columns (fast path on), or None (model's function only)
    window_days: int | None = None
    # whether the reference takes `window_days` (else the window is not applied: see the class docstring)
    ref_window: bool = False

    @classmethod
    def for_model(cls, reference: Callable[..., pd.DataFrame], window_days: int | None = None) -> "FastSummary":
        """Check `summarise_one` against `reference` on the probe histories (with the window: they span more than a
        year); the fast path is used only if every probe's frame is identical (values, dtypes, order) on the
        model's columns."""
        try:
            takes_window = "window_days" in inspect.signature(reference).parameters
        except (TypeError, ValueError):
            takes_window = False
        off = cls(reference, None, window_days, takes_window)
        try:
            cols: tuple[str, ...] | None = None
            for o, e, t in probe_histories():
                want = off(o, e, t)
                got = off._fast(o, e, t)
                if got is None or not set(want.columns) <= set(got.columns):
                    return off
                cols = tuple(want.columns)
                pd.testing.assert_frame_equal(got[list(cols)], want, check_exact=True)
        except Exception as e:  # noqa: BLE001 - any difference means: use the model's own function
            log.warning("recs history summary: fast path off (differs from the model's: %s)", str(e)[:200])
            return off
        return cls(reference, cols, window_days, takes_window)

    @property
    def window(self) -> int | None:
        """The window applied: `window_days` when the model's function takes it, else None (whole history)."""
        return self.window_days if self.ref_window else None

    def _fast(self, orders: pd.DataFrame, events: pd.DataFrame | None, as_of: pd.Timestamp) -> pd.DataFrame | None:
        return summarise_one(orders, events, as_of, window_days=self.window)

    def __call__(self, orders: pd.DataFrame, events: pd.DataFrame | None, as_of: pd.Timestamp) -> pd.DataFrame:
        if self.columns is not None:
            got = self._fast(orders, events, as_of)
            if got is not None:
                return got[list(self.columns)]
        w = self.window
        return self.reference(orders, events, as_of) if w is None else \
            self.reference(orders, events, as_of, window_days=w)
