"""Fitting the linear scorer (`member_pyfunc.linear.LinearScorer`): an L2-regularised logistic regression on
signed-log, standardised numeric features, the diverse learner the churn stack blends with its boosters."""
from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np

from training.member_pyfunc.linear import LinearScorer, signed_log


def fit_logistic(x: np.ndarray, y: np.ndarray, categorical: list[int] | tuple[int, ...] = (),
                 c: float = 0.03) -> LinearScorer:
    """Fit y (0/1) ~ logistic(standardised signed-log numeric columns of `x`) with inverse L2 strength `c`.

    Every statistic (medians, means, scales) comes from the rows given, so a scorer fitted on some folds scores the
    others out of sample. Raises ValueError when `y` has a single class or `x` has no numeric column.
    """
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"x must be rows × columns with one label per row, got {x.shape} and {y.shape}")
    if np.unique(y).size < 2:
        raise ValueError("the linear learner needs both classes in its rows")
    cat = set(int(i) for i in categorical)
    columns = [j for j in range(x.shape[1]) if j not in cat]
    if not columns:
        raise ValueError("the linear learner needs at least one numeric feature column")
    z = signed_log(x[:, columns])
    miss = np.isnan(z)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing column has no median: filled with 0
        median = np.nanmedian(z, axis=0)
    median = np.where(np.isfinite(median), median, 0.0)
    filled = np.where(miss, median, z)
    mean, scale = filled.mean(axis=0), filled.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    indicators = np.flatnonzero(miss.any(axis=0) & ~miss.all(axis=0)).tolist()
    scaling = LinearScorer(columns=columns, median=median.tolist(), mean=mean.tolist(), scale=scale.tolist(),
                           indicators=indicators, coef=[], intercept=0.0)
    lr = LogisticRegression(C=c, max_iter=2000).fit(scaling.design(x), y)  # the design the scorer applies
    return replace(scaling, coef=lr.coef_[0].tolist(), intercept=float(lr.intercept_[0]))
