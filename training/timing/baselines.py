"""Timing baselines on the same members and cutoff as the model: P(next paid order within d days).

- `gap_baseline`: each member's mean inter-purchase gap g (between distinct paid order days before the cutoff;
  members with a single order day get the median g of the others) as an exponential waiting time:
  P(within d) = 1 − e^(−d/g), median g·ln 2.
- `bgnbd_baseline`: BG/NBD (pymc-marketing, MAP fit on paid orders strictly before the cutoff) probability of at
  least one purchase in (T, T+d]; needs the `bench` extra (see `training.baselines.has_pymc_marketing`).
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.contract import MEMBER_ID, ORDERED_AT
from training.baselines import BGNBD_HINT, has_pymc_marketing, rfm

#: Days past the horizon at which BG/NBD is also evaluated, to locate medians that lie beyond the horizon.
TAIL_DAYS: tuple[int, ...] = (120, 150, 180, 240, 300, 365, 450, 545, 730)


@dataclass
class CurvePrediction:
    """One method's prediction for the test members: P(order within d) on the day grid 1..H, and the median."""

    name: str
    cdf: np.ndarray          # members × H, column d−1 = P(next order within d days)
    median_days: np.ndarray  # members

    def __post_init__(self) -> None:
        if self.cdf.ndim != 2 or self.cdf.shape[0] != len(self.median_days):
            raise ValueError(f"{self.name}: cdf {self.cdf.shape} and median {self.median_days.shape} disagree")


def paid_days(orders: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Per member with a paid order before the cutoff: number of distinct order days, first and last day."""
    o = orders[(pd.to_datetime(orders[ORDERED_AT]) < cutoff)
               & (orders["status"].astype("string").fillna("paid") == "paid")]
    day = pd.to_datetime(o[ORDERED_AT]).dt.floor("D")
    d = pd.DataFrame({MEMBER_ID: o[MEMBER_ID].astype("string").to_numpy(), "day": day.to_numpy()}).drop_duplicates()
    g = d.groupby(MEMBER_ID)["day"]
    return pd.DataFrame({"n_days": g.size(), "first": g.min(), "last": g.max()})


def gap_baseline(orders: pd.DataFrame, cutoff: pd.Timestamp, members: pd.Series, horizon: int,
                 max_days: float = 730.0) -> CurvePrediction:
    """Exponential waiting time with each member's mean gap between paid order days before the cutoff."""
    stats = paid_days(orders, cutoff)
    gap = ((stats["last"] - stats["first"]) / pd.Timedelta(days=1)) / (stats["n_days"] - 1)
    gap = gap[(stats["n_days"] > 1) & (gap > 0)]
    fallback = float(gap.median()) if len(gap) else float(horizon)
    g = gap.reindex(members.astype(str).to_numpy()).fillna(fallback).to_numpy(dtype="float64")
    days = np.arange(1, horizon + 1, dtype="float64")
    cdf = 1.0 - np.exp(-days[None, :] / g[:, None])
    return CurvePrediction("mean_gap", cdf, np.minimum(g * np.log(2.0), max_days))


def bgnbd_baseline(orders: pd.DataFrame, cutoff: pd.Timestamp, members: pd.Series, horizon: int,
                   max_days: float = 730.0) -> CurvePrediction:
    """BG/NBD P(at least one purchase within d days) for d = 1..H (and the median, interpolated on a wider grid)."""
    if not has_pymc_marketing():
        raise ImportError(BGNBD_HINT)
    from pymc_marketing.clv import BetaGeoModel

    for name in ("pymc", "pytensor", "pymc_marketing", "pymc_extras"):
        logging.getLogger(name).setLevel(logging.ERROR)
    data = rfm(orders.assign(amount=orders["amount"].astype("float64").fillna(0.0)) if "amount" in orders.columns
               else orders.assign(amount=0.0), cutoff)[["customer_id", "frequency", "recency", "T"]]
    grid = [*range(1, horizon + 1), *[d for d in TAIL_DAYS if d > horizon]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bg = BetaGeoModel(data=data)
        bg.fit(fit_method="map", progressbar=False)
        cols = [bg.expected_probability_no_purchase(t=d, data=data).mean(("chain", "draw")).to_numpy()
                for d in grid]
    p_none = pd.DataFrame(np.column_stack(cols), index=data["customer_id"].astype(str).to_numpy())
    ids = members.astype(str).to_numpy()
    # members without a paid order before the cutoff are not in the test population; guard anyway
    cdf_all = 1.0 - p_none.reindex(ids).fillna(1.0).to_numpy(dtype="float64")
    cdf_all = np.maximum.accumulate(np.clip(cdf_all, 0.0, 1.0), axis=1)
    return CurvePrediction("bgnbd", cdf_all[:, :horizon], median_from_cdf(cdf_all, grid, max_days))


def median_from_cdf(cdf: np.ndarray, days: Sequence[float], max_days: float) -> np.ndarray:
    """First d with CDF ≥ 0.5, linearly interpolated between grid days (CDF 0 at day 0); `max_days` if never."""
    d = np.r_[0.0, np.asarray(days, dtype="float64")]
    c = np.hstack([np.zeros((cdf.shape[0], 1)), cdf])
    reached = c >= 0.5
    has = reached.any(axis=1)
    k = np.where(has, reached.argmax(axis=1), 1)
    rows = np.arange(len(c))
    lo_c, hi_c = c[rows, k - 1], c[rows, k]
    frac = np.where(hi_c > lo_c, (0.5 - lo_c) / np.where(hi_c > lo_c, hi_c - lo_c, 1.0), 0.0)
    med = d[k - 1] + frac * (d[k] - d[k - 1])
    return np.where(has, med, max_days)
