"""Fitting probability calibration on held-out margins (Platt or isotonic); applying it is `member_pyfunc`'s job."""
from __future__ import annotations

import numpy as np

from training.member_pyfunc.calibration import Calibrator, _sigmoid

KINDS = ("platt", "isotonic", "identity")


def fit_calibrator(margin: np.ndarray, y: np.ndarray, kind: str = "platt") -> Calibrator:
    """Fit a calibrator mapping raw booster margins to probabilities on rows the booster did not train on.

    Platt (logistic regression on the margin) keeps the ranking (AUC unchanged) and needs few rows; isotonic is
    more flexible but turns the score into steps (ties lower AUC slightly) and needs thousands of rows.
    """
    margin = np.asarray(margin, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if kind not in KINDS:
        raise ValueError(f"unknown calibration {kind!r}; expected one of {KINDS}")
    if kind == "identity" or len(np.unique(y)) < 2:
        return Calibrator("identity")
    if kind == "platt":
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=1e6, max_iter=1000).fit(margin.reshape(-1, 1), y)
        return Calibrator("platt", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(_sigmoid(margin), y)
    return Calibrator("isotonic", x=[float(v) for v in iso.X_thresholds_], y=[float(v) for v in iso.y_thresholds_])
