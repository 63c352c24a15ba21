"""Reason codes: the features that push one member's score up the most, said in plain words.

`top_reasons(contrib, frame, columns, k)` takes LightGBM `pred_contrib` output (rows × (features + 1)), keeps each
row's k largest *positive* contributions and renders each as a phrase such as
"92 days since last order, usual gap 21 days". Rendering is grouped: one template call per (slot, feature) with
the numpy values of the rows in that group, so a batch of a million members costs a few template calls, and one
member costs microseconds (no pandas objects per call).

A template is a function (Values of the selected rows) → list of phrases. Features without a specific template get
a generic phrase built from the column name ("orders in the last 90 days: 0").
"""
from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable

import numpy as np
import pandas as pd


class Values:
    """Column values of the selected rows as numpy arrays (numbers as float64 with NaN), read lazily and cached."""

    def __init__(self, frame: pd.DataFrame, rows: np.ndarray, cache: dict[str, np.ndarray]) -> None:
        self._frame, self._rows, self._cache = frame, rows, cache

    def has(self, name: str) -> bool:
        return name in self._frame.columns

    def first(self, *names: str) -> str | None:
        return next((n for n in names if n in self._frame.columns), None)

    def __getitem__(self, name: str) -> np.ndarray:
        arr = self._cache.get(name)
        if arr is None:
            s = self._frame[name]
            if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
                arr = s.to_numpy(dtype=np.float64, na_value=np.nan)
            else:
                arr = s.astype(object).to_numpy()
            self._cache[name] = arr
        return arr[self._rows]

    def __len__(self) -> int:
        return len(self._rows)


Template = Callable[[Values], list[str]]


def _is_number(x: object) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def fmt_num(x: float, decimals: int = 0) -> str:
    """`x` with thousands separators and `decimals` decimals; 'unknown' for missing or non-finite values."""
    return f"{x:,.{decimals}f}" if _is_number(x) and math.isfinite(x) else "unknown"


def fmt_value(x: object) -> str:
    """One value as a member reads it, decided by the value alone (never by the rest of the batch): whole numbers
    without decimals, other numbers with two, text as is, missing as 'unknown'."""
    if x is None or x is pd.NA or (_is_number(x) and not math.isfinite(x)):
        return "unknown"
    if _is_number(x):
        return fmt_num(x, 0 if abs(x - round(x)) < 1e-9 else 2)
    return str(x)


def _since_last(d: float, g: float) -> str:
    """'92 days since last order, usual gap 21 days' (or 'only one order so far' without a gap; or no order)."""
    if not math.isfinite(d):
        return "no paid order yet"
    return f"{fmt_num(d)} days since last order, " + (f"usual gap {fmt_num(g)} days" if math.isfinite(g)
                                                      else "only one order so far")


def _recency(v: Values) -> list[str]:
    days = v[v.first("recency_days", "days_since_last_order")]
    gap_col = v.first("gap_mean_days", "mean_gap_days", "interpurchase_mean_days")
    if gap_col is None:
        return [f"{fmt_num(d)} days since last order" if math.isfinite(d) else "no paid order yet" for d in days]
    return [_since_last(d, g) for d, g in zip(days, v[gap_col])]


def _recency_ratio(col: str) -> Template:
    """Without a usual gap (one order so far, or none) the ratio is undefined: say the recency instead."""

    def render(v: Values) -> list[str]:
        r = v[col]
        days_col = v.first("recency_days", "days_since_last_order")
        gap_col = v.first("gap_mean_days", "mean_gap_days", "interpurchase_mean_days")
        nan = np.full(len(v), np.nan)
        days = v[days_col] if days_col else nan
        gaps = v[gap_col] if gap_col else nan
        out = []
        for x, d, g in zip(r, days, gaps):
            if not math.isfinite(x):
                out.append(_since_last(d, g) if days_col else "only one order so far, no usual gap yet")
            elif days_col and gap_col and math.isfinite(d) and math.isfinite(g):
                out.append(f"{fmt_num(x, 1)}× the usual time between orders has passed ({fmt_num(d)} days vs usual "
                           f"{fmt_num(g)})")
            else:
                out.append(f"{fmt_num(x, 1)}× the usual time between orders has passed")
        return out

    return render


def _expected_orders(horizon_days: int | None) -> Template:
    """BG/NBD expected orders in the model's horizon: 'about 0.3 orders expected in the next 60 days at …'."""
    period = f"the next {horizon_days} days" if horizon_days else "the coming period"

    def render(v: Values) -> list[str]:
        return [f"about {fmt_num(e, 1)} orders expected in {period} at this member's usual pace"
                if math.isfinite(e) else "no order pattern yet" for e in v["bgnbd_expected_purchases"]]

    return render


def _p_alive(v: Values) -> list[str]:
    """BG/NBD P(alive) from the member's order pattern, as a percentage."""
    return [f"{fmt_num(p * 100)}% chance of still being an active customer, judging by the order pattern"
            if math.isfinite(p) else "no order pattern yet" for p in v["bgnbd_p_alive"]]


def _trend(col: str, what: str) -> Template:
    """trend = (last 90 days − prior 90) ÷ (their sum), in [−1, 1]: said as a percentage change."""

    def phrase(t: float) -> str:
        if not math.isfinite(t):
            return f"no {what} in the last 180 days"
        if t <= -0.999:
            return f"no {what} in the last 90 days, after some in the 90 days before"
        if t >= 0.999:
            return f"all {what} in the last 90 days, none in the 90 days before"
        change = 2 * t / (1 - t) * 100  # last ÷ prior − 1
        return f"{what} in the last 90 days {'down' if change < 0 else 'up'} {abs(change):.0f}% on the 90 days before"

    def render(v: Values) -> list[str]:
        return [phrase(t) for t in v[col]]

    return render


LABELS = {
    "orders_lifetime": "orders so far", "spend_lifetime": "spend so far", "tenure_days": "days as a member",
    "days_since_first_order": "days since the first order", "gap_mean_days": "usual days between orders",
    "gap_std_days": "variation of days between orders", "gap_last_days": "days between the last two orders",
    "orders_prior_90d": "orders in the 90 days before the last 90", "avg_order_value": "average order value",
    "max_order_value": "largest order value", "items_per_order": "items per order",
    "lines_per_order": "lines per order", "n_categories": "categories bought",
    "category_entropy": "variety of categories bought", "top_category_share": "share of lines in the top category",
    "top_category": "most-bought category", "discount_rate": "discount rate",
    "discounted_order_share": "share of orders with a discount", "coupon_order_share": "share of orders with a coupon",
    "refund_line_rate": "refund rate", "refund_amount_rate": "refunded share of spend", "n_refunds": "refunds",
    "n_cancellations": "cancellations", "preferred_weekday": "usual order weekday (0 = Monday)",
    "preferred_hour": "usual order hour", "evening_order_share": "share of evening orders",
    "weekend_order_share": "share of weekend orders", "events_lifetime": "interactions so far",
    "days_since_last_event": "days since the last interaction", "marketing_consent": "accepts marketing (1 = yes)",
    "days_to_birthday": "days to birthday", "tier_rank": "loyalty tier (0 = lowest)",
    "points_balance": "points balance", "spend_to_next_tier": "spend still needed for the next tier",
    "bgnbd_expected_spend": "spend expected in the coming period at this member's pace",
}
_DAYS_WINDOW = re.compile(r"^(?P<stem>.+?)_(?P<n>\d+)d$")
_WORDS = {"n": "number of", "cnt": "count of", "avg": "average", "std": "spread of", "pct": "share of",
          "monetary": "spend", "frequency": "orders"}


def humanize(column: str) -> str:
    """'orders_90d' → 'orders in the last 90 days'; 'ev_login_30d' → 'login events in the last 30 days'."""
    if column in LABELS:
        return LABELS[column]
    m = _DAYS_WINDOW.match(column)
    stem, suffix = (m["stem"], f" in the last {m['n']} days") if m else (column, "")
    if stem.startswith("ev_"):
        stem = stem.removeprefix("ev_") + "_events"
    return " ".join(_WORDS.get(w, w) for w in stem.split("_") if w) + suffix


def _generic(column: str) -> Template:
    label = humanize(column)

    def render(v: Values) -> list[str]:
        x = v[column]
        if column.endswith(("_share", "_rate")):
            return [f"{label}: {fmt_num(t * 100)}%" if _is_number(t) and math.isfinite(t) else f"{label}: unknown"
                    for t in x]
        return [f"{label}: {fmt_value(t)}" for t in x]  # per value: the same member reads the same alone or in a batch

    return render


def templates_for(columns: list[str], horizon_days: int | None = None) -> dict[str, Template]:
    """The template of each column: a specific phrase where one is known, the generic phrase otherwise
    (`horizon_days`: the period of the model's derived expectations, said in their phrases)."""
    out: dict[str, Template] = {}
    for c in columns:
        if c in ("recency_days", "days_since_last_order"):
            out[c] = _recency
        elif c in ("recency_over_gap", "recency_gap_ratio", "recency_to_mean_gap"):
            out[c] = _recency_ratio(c)
        elif c in ("spend_trend", "monetary_trend"):
            out[c] = _trend(c, "spend")
        elif c == "orders_trend":
            out[c] = _trend(c, "orders")
        elif c == "bgnbd_p_alive":
            out[c] = _p_alive
        elif c == "bgnbd_expected_purchases":
            out[c] = _expected_orders(horizon_days)
        else:
            out[c] = _generic(c)
    return out


SPECIFIC = frozenset({"recency_days", "days_since_last_order", "recency_over_gap", "recency_gap_ratio",
                      "recency_to_mean_gap", "spend_trend", "monetary_trend", "orders_trend", "bgnbd_p_alive",
                      "bgnbd_expected_purchases"})


def top_reasons(contrib: np.ndarray, frame: pd.DataFrame, columns: list[str], k: int = 3,
                templates: dict[str, Template] | None = None, x: np.ndarray | None = None) -> list[np.ndarray]:
    """Return k object arrays (reason_1..k) of phrases for each row's top positive contributions ('' when fewer).

    With `x` (the model's input matrix), a missing value of a feature without a specific phrase is not given as a
    reason ("age: unknown" explains nothing to a member or a marketer).
    """
    n = len(frame)
    feats = np.array(contrib, dtype=np.float64)[:, : len(columns)]  # the last column is the bias term
    if x is not None:
        generic = np.array([c not in SPECIFIC for c in columns])
        feats[np.isnan(x) & generic[None, :]] = 0.0
    templates = templates or templates_for(columns)
    k_eff = min(k, feats.shape[1])
    if n == 0:
        return [np.empty(0, dtype=object) for _ in range(k)]
    order = np.argsort(-feats, axis=1, kind="stable")[:, :k_eff]
    top_vals = np.take_along_axis(feats, order, axis=1)
    cache: dict[str, np.ndarray] = {}
    out: list[np.ndarray] = []
    for slot in range(k):
        phrases = np.full(n, "", dtype=object)
        if slot < k_eff:
            idx = order[:, slot]
            positive = top_vals[:, slot] > 0
            for j in np.unique(idx[positive]):
                sel = np.flatnonzero(positive & (idx == j))
                phrases[sel] = templates[columns[j]](Values(frame, sel, cache))
        out.append(phrases)
    return out
