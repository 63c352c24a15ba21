"""Discrete-time hazard machinery for the timing model (numpy only; travels inside the MLflow model).

A member observed from a cutoff T is cut into *person-period* rows, one per day bin [e_k, e_{k+1}) up to the horizon
H. A row's target is 1 in the bin where the member's next order falls and 0 in the bins before it; a member with no
order in the window (censored at c) contributes only the bins it was fully observed in, all 0. A binary classifier
on these rows estimates the hazard h_k(x) = P(order in bin k | no order before bin k, x), and

    S(e_k) = Π_{j<k} (1 − h_j(x)),   P(order within d) = 1 − S(d),

a survival curve: the CDF is monotone in d by construction, and censored members never count as negatives past the
time they were seen. Inside a bin the daily hazard is constant (geometric interpolation); past H the last bin's
daily rate continues, which gives a median and an expected time even when most mass lies beyond the horizon.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BIN_START = "pp_bin_start"
BIN_WIDTH = "pp_bin_width"
ELAPSED = "pp_elapsed_days"
ELAPSED_RATIO = "pp_elapsed_over_gap"
RATE_LIFETIME = "pp_rate_lifetime"
RECENCY_OVER_TENURE = "pp_recency_over_tenure"
RATE_365 = "pp_rate_365d"
#: Member features the derived columns are built from (by role), when the feature frame has them.
ROLES: dict[str, str] = {"recency": "recency_days", "gap": "gap_mean_days", "orders": "orders_lifetime",
                         "tenure": "days_since_first_order", "orders_365": "orders_365d"}

_EPS = 1e-9


def validate_edges(edges: Sequence[float]) -> np.ndarray:
    """Bin edges as a float array: starting at 0, strictly increasing, at least one bin."""
    e = np.asarray(edges, dtype="float64")
    if e.ndim != 1 or len(e) < 2 or e[0] != 0 or np.any(np.diff(e) <= 0):
        raise ValueError(f"bin edges must start at 0 and strictly increase, got {list(edges)}")
    return e


def expand_person_period(durations: np.ndarray, events: np.ndarray,
                         edges: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Person-period rows for members with `durations` (days from the cutoff to the next order, or to censoring)
    and `events` (True = ordered at that time). Returns (member row index, bin index, 0/1 target), vectorised.

    An event at t falls in bin k with e_k ≤ t < e_{k+1}: rows for bins 0..k, target 1 in bin k; an event at or past
    the last edge counts as censored there. A member censored at c contributes the bins ending at or before c.
    """
    e = validate_edges(edges)
    t = np.asarray(durations, dtype="float64")
    ev = np.asarray(events, dtype=bool)
    if t.shape != ev.shape or t.ndim != 1:
        raise ValueError(f"durations and events must be 1-D of equal length, got {t.shape} and {ev.shape}")
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ValueError("durations must be finite and ≥ 0")
    n_bins = len(e) - 1
    ev = ev & (t < e[-1])
    pos = np.searchsorted(e, t, side="right") - 1            # bin holding t; = number of bins ending at or before t
    counts = np.clip(np.where(ev, pos + 1, pos), 0, n_bins).astype("int64")
    member = np.repeat(np.arange(len(t)), counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    k = np.arange(int(counts.sum())) - starts
    last = k == (counts[member] - 1)
    y = (last & ev[member]).astype("int8")
    return member, k.astype("int64"), y


def role_indices(columns: Sequence[str], roles: dict[str, str] | None = None) -> dict[str, int]:
    """Position of each role's feature (see ROLES) among the model's member columns, for those present."""
    cols = list(columns)
    return {role: cols.index(name) for role, name in (roles or ROLES).items() if name in cols}


def pp_feature_names(columns: Sequence[str], idx: dict[str, int]) -> list[str]:
    """Column names of the person-period matrix built by `person_period_matrix` with role indices `idx`."""
    names = list(columns) + [BIN_START, BIN_WIDTH]
    if "orders" in idx and "tenure" in idx:
        names.append(RATE_LIFETIME)
    if "recency" in idx and "tenure" in idx:
        names.append(RECENCY_OVER_TENURE)
    if "orders_365" in idx and "tenure" in idx:
        names.append(RATE_365)
    if "recency" in idx:
        names.append(ELAPSED)
        if "gap" in idx:
            names.append(ELAPSED_RATIO)
    return names


def person_period_matrix(x: np.ndarray, member: np.ndarray, k: np.ndarray, edges: Sequence[float],
                         idx: dict[str, int] | None = None) -> np.ndarray:
    """Member features (rows of `x`) repeated per bin, plus the bin's start and width, and, from the member
    features whose roles are known (`idx`, see ROLES): the purchase rate over the member's life and the last 365 days,
    recency ÷ tenure (what BG/NBD summarises a history by), and the days elapsed since the last order at the bin's
    middle (and that ÷ the mean gap): the clock a replenishing customer runs on, which trees otherwise need many
    splits to rebuild. Columns in the order of `pp_feature_names`."""
    e = validate_edges(edges)
    idx = idx or {}
    start = e[k]
    width = e[k + 1] - e[k]
    extra = [start, width]

    def col(role: str) -> np.ndarray:
        return x[member, idx[role]]

    with np.errstate(divide="ignore", invalid="ignore"):
        if "orders" in idx and "tenure" in idx:
            extra.append(col("orders") / (col("tenure") + 1.0))
        if "recency" in idx and "tenure" in idx:
            extra.append(col("recency") / (col("tenure") + 1.0))
        if "orders_365" in idx and "tenure" in idx:
            extra.append(col("orders_365") / np.minimum(col("tenure") + 1.0, 365.0))
        if "recency" in idx:
            elapsed = col("recency") + start + width / 2
            extra.append(elapsed)
            if "gap" in idx:
                gap = col("gap")
                extra.append(np.where(gap > 0, elapsed / gap, np.nan))
    return np.hstack([x[member], np.column_stack(extra)])


def survival_at_edges(h: np.ndarray) -> np.ndarray:
    """S at every edge (n × (K+1)), S[:, 0] = 1, from bin hazards h (n × K)."""
    h = np.clip(np.asarray(h, dtype="float64"), 0.0, 1.0 - _EPS)
    return np.hstack([np.ones((h.shape[0], 1)), np.cumprod(1.0 - h, axis=1)])


def daily_rates(h: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Constant daily hazard rate inside each bin: −ln(1 − h_k) ÷ width_k."""
    e = validate_edges(edges)
    h = np.clip(np.asarray(h, dtype="float64"), 0.0, 1.0 - _EPS)
    return -np.log1p(-h) / np.diff(e)[None, :]


def cdf_at(h: np.ndarray, edges: Sequence[float], days: Sequence[float]) -> np.ndarray:
    """P(next order within d) = 1 − S(d) per member × d (n × len(days)); non-decreasing in d for every member."""
    e = validate_edges(edges)
    d = np.asarray(days, dtype="float64")
    if np.any(d < 0):
        raise ValueError("days must be ≥ 0")
    s_edges = survival_at_edges(h)
    lam = daily_rates(h, e)
    k = np.clip(np.searchsorted(e, d, side="right") - 1, 0, len(e) - 2)
    return 1.0 - s_edges[:, k] * np.exp(-lam[:, k] * (d - e[k])[None, :])


def median_days(h: np.ndarray, edges: Sequence[float], max_days: float) -> np.ndarray:
    """The day t with S(t) = 0.5 (as likely as not to have ordered), extrapolated past the horizon with the last
    bin's rate and capped at `max_days`."""
    e = validate_edges(edges)
    s_edges = survival_at_edges(h)
    lam = daily_rates(h, e)
    n, n_bins = lam.shape
    below = s_edges[:, 1:] <= 0.5
    has = below.any(axis=1)
    k = np.where(has, below.argmax(axis=1), n_bins - 1)
    rows = np.arange(n)
    s0 = np.where(has, s_edges[rows, k], s_edges[:, -1])
    start = np.where(has, e[k], e[-1])
    rate = np.maximum(lam[rows, k], 1e-12)
    t = start + np.log(np.maximum(s0, 1e-300) / 0.5) / rate
    return np.minimum(np.maximum(t, 0.0), max_days)


def expected_days(h: np.ndarray, edges: Sequence[float], max_days: float) -> np.ndarray:
    """E[min(T, max_days)]: the area under the survival curve up to `max_days` (exact per bin under a constant
    daily hazard; the last bin's rate continues past the horizon)."""
    e = validate_edges(edges)
    s_edges = survival_at_edges(h)
    lam = daily_rates(h, e)
    w = np.diff(e)[None, :]
    lw = lam * w
    safe = np.where(lw < 1e-9, 1.0, lam)
    area = np.where(lw < 1e-9, s_edges[:, :-1] * w, s_edges[:, :-1] * (-np.expm1(-lw)) / safe)
    tail_len = max(float(max_days) - float(e[-1]), 0.0)
    lt = lam[:, -1]
    lt_safe = np.where(lt * tail_len < 1e-9, 1.0, lt)
    tail = np.where(lt * tail_len < 1e-9, s_edges[:, -1] * tail_len,
                    s_edges[:, -1] * (-np.expm1(-lt * tail_len)) / lt_safe)
    return area.sum(axis=1) + tail
