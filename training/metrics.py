"""Evaluation metrics (vectorised numpy; ties handled as the average over tie orderings) and a paired bootstrap.

Classification: auc, pr_auc, brier, log_loss, lift_top_decile.
Value (regression): gini (normalized), spearman, mae, top_decile_capture, decile calibration.
`paired_bootstrap_ci(metric, y, model, baseline)`: 95% interval of metric(model) − metric(baseline) resampling
members with the same indices for both, so the interval reflects the difference, not two separate noises.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
from scipy.stats import rankdata

Metric = Callable[[np.ndarray, np.ndarray], float]


def _arrays(y: object, p: object) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D of equal length, got {y.shape} and {p.shape}")
    if not (np.isfinite(y).all() and np.isfinite(p).all()):
        raise ValueError("labels and scores must be finite (no NaN/inf)")
    return y, p


# ---------------------------------------------------------------- classification
def auc(y: object, p: object) -> float:
    """ROC AUC via the rank-sum (Mann-Whitney) formula; ties count one half."""
    y, p = _arrays(y, p)
    pos = y > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(p)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def pr_auc(y: object, p: object) -> float:
    """Average precision (area under the precision-recall curve, step-wise as sklearn's average_precision_score)."""
    y, p = _arrays(y, p)
    pos = y > 0.5
    n_pos = int(pos.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-p, kind="mergesort")
    ps, ys = p[order], pos[order].astype(np.float64)
    tp = np.cumsum(ys)
    # one point per distinct score: the last index of each tie group
    last = np.r_[np.flatnonzero(np.diff(ps) != 0), len(ps) - 1]
    tp_at, n_at = tp[last], last + 1.0
    precision = tp_at / n_at
    recall = tp_at / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def brier(y: object, p: object) -> float:
    y, p = _arrays(y, p)
    return float(np.mean((p - y) ** 2))


def log_loss(y: object, p: object, eps: float = 1e-15) -> float:
    y, p = _arrays(y, p)
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _top_fraction_weights(p: np.ndarray, frac: float) -> np.ndarray:
    """Weight of each row in the top `frac` by score; rows tied at the boundary share the remaining slots."""
    n = len(p)
    k = frac * n
    ranks_desc = rankdata(-p, method="min")  # 1 = highest
    counts = rankdata(-p, method="max") - ranks_desc + 1  # size of each row's tie group
    start = ranks_desc - 1  # rows strictly above this row's tie group
    return np.clip((k - start) / counts, 0.0, 1.0)


def lift_top_decile(y: object, p: object) -> float:
    """Event rate among the top 10% by score ÷ the overall event rate."""
    y, p = _arrays(y, p)
    base = y.mean()
    if base == 0:
        return float("nan")
    w = _top_fraction_weights(p, 0.1)
    return float((w * y).sum() / w.sum() / base)


# ---------------------------------------------------------------- value / regression
def _lorenz_area(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the cumulative-value curve with rows ordered by descending score (ties as one group)."""
    order = np.argsort(-p, kind="mergesort")
    ps, ys = p[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(ps) != 0), len(ps) - 1]
    cum_y = np.r_[0.0, np.cumsum(ys)[last]] / ys.sum()
    cum_n = np.r_[0.0, (last + 1.0)] / len(ys)
    return float(np.sum(np.diff(cum_n) * (cum_y[1:] + cum_y[:-1]) / 2))


def gini(y: object, p: object) -> float:
    """Normalized Gini: Gini of the scores' ordering ÷ Gini of the perfect ordering (1 = perfect, 0 = random).

    For a 0/1 target it equals 2·AUC − 1.
    """
    y, p = _arrays(y, p)
    if y.sum() <= 0:
        return float("nan")
    best = _lorenz_area(y, y) - 0.5
    if best <= 1e-12:  # every member has the same value: no ordering can do better than another
        return float("nan")
    return float((_lorenz_area(y, p) - 0.5) / best)


def spearman(y: object, p: object) -> float:
    y, p = _arrays(y, p)
    ry, rp = rankdata(y), rankdata(p)
    if ry.std() == 0 or rp.std() == 0:
        return float("nan")
    return float(np.corrcoef(ry, rp)[0, 1])


def mae(y: object, p: object) -> float:
    y, p = _arrays(y, p)
    return float(np.mean(np.abs(p - y)))


def top_decile_capture(y: object, p: object) -> float:
    """Share of the total actual value held by the top 10% of members by predicted value."""
    y, p = _arrays(y, p)
    total = y.sum()
    if total <= 0:
        return float("nan")
    return float((_top_fraction_weights(p, 0.1) * y).sum() / total)


def decile_table(y: object, p: object, n_bins: int = 10) -> pd.DataFrame:
    """Members in `n_bins` equal-count bins by predicted value (bin 1 = highest): mean predicted vs mean actual."""
    y, p = _arrays(y, p)
    order = np.argsort(-p, kind="mergesort")
    bins = np.empty(len(p), dtype=np.int64)
    bins[order] = np.arange(len(p)) * n_bins // max(len(p), 1) + 1
    df = pd.DataFrame({"decile": bins, "predicted": p, "actual": y})
    return (df.groupby("decile").agg(members=("actual", "size"), predicted=("predicted", "mean"),
                                     actual=("actual", "mean")).reset_index())


def decile_calibration_error(y: object, p: object) -> float:
    """Mean |mean predicted − mean actual| over predicted-value deciles, relative to the overall mean actual."""
    y, p = _arrays(y, p)
    t = decile_table(y, p)
    m = y.mean()
    return float(np.mean(np.abs(t["predicted"] - t["actual"])) / m) if m > 0 else float("nan")


CLASSIFICATION: dict[str, Metric] = {
    "auc": auc, "pr_auc": pr_auc, "brier": brier, "log_loss": log_loss, "lift_top_decile": lift_top_decile,
}
VALUE: dict[str, Metric] = {
    "gini": gini, "spearman": spearman, "mae": mae, "top_decile_capture": top_decile_capture,
    "decile_calibration_error": decile_calibration_error,
}
# Metrics where lower is better (the gain of a model over a baseline is baseline − model for these).
LOWER_IS_BETTER = frozenset({"brier", "log_loss", "mae", "decile_calibration_error"})
# Metrics that only make sense for calibrated probabilities / values on the target's scale.
SCALE_DEPENDENT = frozenset({"brier", "log_loss", "mae", "decile_calibration_error"})


def compute(metrics: Mapping[str, Metric], y: object, p: object, skip: frozenset[str] = frozenset()) -> dict[str, float]:
    return {name: fn(y, p) for name, fn in metrics.items() if name not in skip}


def paired_bootstrap_ci(metric: Metric, y: object, model: object, baseline: object, *, n_boot: int = 1000,
                        seed: int = 0, level: float = 0.95, lower_is_better: bool = False) -> tuple[float, float]:
    """Percentile interval of the gain metric(model) − metric(baseline) (sign flipped when lower is better)."""
    y, pm = _arrays(y, model)
    _, pb = _arrays(y, baseline)
    rng = np.random.default_rng(seed)
    n = len(y)
    diffs = np.empty(n_boot)
    for b in range(n_boot):  # loop over resamples (not rows); each metric call is vectorised
        idx = rng.integers(0, n, n)
        diffs[b] = metric(y[idx], pm[idx]) - metric(y[idx], pb[idx])
    if lower_is_better:
        diffs = -diffs
    diffs = diffs[np.isfinite(diffs)]
    if len(diffs) == 0:
        return (float("nan"), float("nan"))
    alpha = (1 - level) / 2
    lo, hi = np.quantile(diffs, [alpha, 1 - alpha])
    return (float(lo), float(hi))
