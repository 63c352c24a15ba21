"""A linear scorer over the booster's feature matrix, applied with numpy only (fitting lives in `training.linear`).

A different learner than the trees, fitted on the same rows, so its errors differ: the churn stack blends its margin
with the boosters' (issue 5 lever table). Each numeric column is put on a signed log scale (sign(v)·log(1 + |v|):
counts, spend and day gaps are long-tailed), non-finite values become the column's training median, then the column
is standardised and clipped to ±`CLIP` standard deviations so one wild value cannot swing the margin. Columns that
had missing values in training also get a 0/1 "was missing" indicator. Categorical columns are left out.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

CLIP = 5.0
DECIMALS = 6  # signed-log features are rounded to this many places (see `signed_log`)


def signed_log(z: np.ndarray) -> np.ndarray:
    """sign(z)·log(1 + |z|) rounded to `DECIMALS` places, with non-finite values (NaN, ±inf) as NaN.

    The rounding makes the margin continuous only above float noise: a feature summed in another order (online vs
    batch features) differs in its last bits, which trees never see but a linear term would pass on to the score."""
    z = np.asarray(z, dtype=np.float64)
    out = np.round(np.sign(z) * np.log1p(np.abs(z)), DECIMALS)
    return np.where(np.isfinite(out), out, np.nan)


@dataclass
class LinearScorer:
    """margin = intercept + Σ coef · standardised(signed_log(x[:, columns])) + Σ coef · missing indicators."""

    columns: list[int]  # positions in the feature matrix (numeric columns only)
    median: list[float]  # fill value per column (signed-log scale)
    mean: list[float]
    scale: list[float]
    indicators: list[int]  # positions within `columns` that get a missing indicator
    coef: list[float]  # len(columns) + len(indicators)
    intercept: float

    def design(self, x: np.ndarray) -> np.ndarray:
        """The standardised design matrix for feature matrix `x` (rows × len(coef))."""
        z = signed_log(np.asarray(x, dtype=np.float64)[:, self.columns])
        miss = np.isnan(z)
        z = np.where(miss, np.asarray(self.median), z)
        z = np.clip((z - np.asarray(self.mean)) / np.asarray(self.scale), -CLIP, CLIP)
        return np.concatenate([z, miss[:, self.indicators].astype(np.float64)], axis=1)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The linear margin per row of feature matrix `x`.

        Summed strictly left to right (a running sum), not by a matrix product or `sum`: those round differently
        for one row than inside a batch (BLAS blocking, pairwise summation), and a member must get the same score
        online as in the batch to the last bit (serving compares them exactly)."""
        terms = self.design(x) * np.asarray(self.coef, dtype=np.float64)
        if terms.shape[1] == 0:
            return np.full(len(terms), self.intercept)
        return np.cumsum(terms, axis=1)[:, -1] + self.intercept

    def save(self, path: Path) -> Path:
        Path(path).write_text(json.dumps(asdict(self)), encoding="utf-8")
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "LinearScorer":
        d = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(columns=[int(v) for v in d["columns"]], median=[float(v) for v in d["median"]],
                   mean=[float(v) for v in d["mean"]], scale=[float(v) for v in d["scale"]],
                   indicators=[int(v) for v in d["indicators"]], coef=[float(v) for v in d["coef"]],
                   intercept=float(d["intercept"]))
