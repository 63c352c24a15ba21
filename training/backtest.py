"""The temporal backtest layout shared by the member-level trainers (churn, LTV, timing).

For a test cutoff T and horizon H: the validation cutoff V is the last month start with V + H ≤ T (its label window
ends before the test window starts), training cutoffs are the month starts c with c + H ≤ V (features.training_set.
temporal_split), at most `max_train_cutoffs` of them (the latest). Features are as of each cutoff, labels over
[c, c + H). The model is fitted on the training cutoffs, early-stopped/calibrated on V and tested at T.

With `every_days` the training cutoffs are denser than monthly: V − H, V − H − every_days, … back to the first
cutoff with enough history (more stacked rows from the same history; each still ends its label window by V).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from features.contract import ORDERED_AT
from features.engine import as_timestamp
from features.store import Store
from features.training_set import TemporalSplit, build_training_set, monthly_cutoffs, temporal_split

MIN_HISTORY_DAYS = 28  # the first training cutoff has at least this much history before it


@dataclass
class BacktestData:
    """Stacked training rows, validation rows, test rows, and how they were made."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    split: TemporalSplit
    test_cutoff: pd.Timestamp
    horizon_days: int
    manifest: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """The §10 `split` block (plus the training layout)."""
        return {"cutoff": self.test_cutoff.strftime("%Y-%m-%d"), "horizon_days": self.horizon_days,
                "members": int(len(self.test)),
                "train_cutoffs": [c.strftime("%Y-%m-%d") for c in self.split.train],
                "validation_cutoff": self.split.validation.strftime("%Y-%m-%d"),
                "train_rows": int(len(self.train)), "validation_rows": int(len(self.valid))}

    def manifest_frame(self, label: str) -> pd.DataFrame:
        """One row per cutoff: role (train/validation/test), rows, label mean: the run's input dataset."""
        rows = []
        for role, df in (("train", self.train), ("validation", self.valid), ("test", self.test)):
            for c, g in df.groupby("cutoff"):
                rows.append({"cutoff": pd.Timestamp(c).strftime("%Y-%m-%d"), "role": role, "rows": int(len(g)),
                             f"{label}_mean": float(g[label].mean())})
        return pd.DataFrame(rows)


def data_span(store: Store) -> tuple[pd.Timestamp, pd.Timestamp]:
    """(first, last) order timestamp of the store."""
    t = store.read("orders", columns=[ORDERED_AT])[ORDERED_AT]
    if t.empty:
        raise ValueError(f"store {store.path} has no orders")
    return pd.Timestamp(t.min()), pd.Timestamp(t.max())


def default_cutoff(store: Store, horizon_days: int) -> pd.Timestamp:
    """The latest month start T whose label window [T, T + H) lies inside the data."""
    _, end = data_span(store)
    last = end.normalize() + pd.Timedelta(days=1) - pd.Timedelta(days=horizon_days)
    t = last.normalize().replace(day=1)
    return t


def plan(store: Store, cutoff: object, horizon_days: int, max_train_cutoffs: int = 12,
         every_days: int | None = None) -> TemporalSplit:
    """Training cutoffs and validation cutoff for a test at `cutoff` (see the module docstring)."""
    if every_days is not None and every_days <= 0:
        raise ValueError(f"every_days must be a positive number of days, got {every_days!r}")
    t = as_timestamp(cutoff, "cutoff")
    start, end = data_span(store)
    if t + pd.Timedelta(days=horizon_days) > end.normalize() + pd.Timedelta(days=1):
        raise ValueError(f"test window [{t.date()}, +{horizon_days} days) runs past the last order ({end.date()}); "
                         "use an earlier --cutoff or a shorter --horizon")
    first = start + pd.Timedelta(days=MIN_HISTORY_DAYS)
    cands = [c for c in monthly_cutoffs(first, t) if c + pd.Timedelta(days=horizon_days) <= t]
    if len(cands) < 2:
        raise ValueError(f"not enough history before {t.date()} for a {horizon_days}-day horizon: need a validation "
                         f"cutoff and at least one training cutoff whose label windows end by {t.date()} "
                         f"(data starts {start.date()})")
    split = temporal_split(cands[:-1], cands[-1], horizon_days)
    train = split.train
    if every_days is not None:
        last, step = (split.validation - pd.Timedelta(days=horizon_days)).normalize(), pd.Timedelta(days=every_days)
        if last >= first:
            train = [last - step * i for i in range(int((last - first) // step), -1, -1)]
    return TemporalSplit(train[-max_train_cutoffs:], split.validation, split.horizon_days)


def load(store: Store, cutoff: object, horizon_days: int, *, max_train_cutoffs: int = 12,
         every_days: int | None = None, progress: Callable[[pd.Timestamp], None] | None = None) -> BacktestData:
    """Build features + labels at every cutoff of the plan and the test cutoff."""
    t = as_timestamp(cutoff, "cutoff")
    split = plan(store, t, horizon_days, max_train_cutoffs, every_days)
    ts = build_training_set(store, [*split.train, split.validation, t], churn_horizon=horizon_days,
                            ltv_horizon=horizon_days, timing_horizon=horizon_days, progress=progress)
    frame = ts.frame
    cut = pd.to_datetime(frame["cutoff"])
    train, valid = split.split_frame(frame)
    test = frame[cut == t].reset_index(drop=True)
    if test.empty:
        raise ValueError(f"no member has a paid order before the test cutoff {t.date()}")
    return BacktestData(train, valid, test, split, t, horizon_days, ts.manifest)


def load_with_progress(store: Store, cutoff: object, horizon_days: int, max_train_cutoffs: int,
                       progress: Any = None, every_days: int | None = None) -> BacktestData:
    """`load` with a rich progress bar (one step per cutoff) when `progress` is a rich Progress."""
    if progress is None:
        return load(store, cutoff, horizon_days, max_train_cutoffs=max_train_cutoffs, every_days=every_days)
    split = plan(store, cutoff, horizon_days, max_train_cutoffs, every_days)
    task = progress.add_task("features + labels per cutoff", total=len(split.train) + 2)
    return load(store, cutoff, horizon_days, max_train_cutoffs=max_train_cutoffs, every_days=every_days,
                progress=lambda _c: progress.advance(task))


def fit_derived(train: pd.DataFrame, horizon_days: int, enabled: bool) -> tuple[Any, str | None]:
    """BG/NBD parameters for the model-side features, fitted on the training rows only (None when disabled or when
    the frame lacks the RFM inputs or buyers); the second item says why they were left out, if they were."""
    from training.member_pyfunc.bgnbd import INPUTS, BgNbd

    if not enabled:
        return None, None
    missing = [c for c in INPUTS if c not in train.columns]
    if missing:
        return None, f"BG/NBD features left out: the feature frame lacks {missing}"
    try:
        return BgNbd.fit(train, horizon_days), None
    except ValueError as e:
        return None, f"BG/NBD features left out: {e}"


def derived_info(derived: Any, why: str | None) -> dict[str, Any]:
    """The fitted BG/NBD parameters (logged with the run), or why the features were left out."""
    if derived is None:
        return {"bgnbd_features": why or "off"}
    return {f"bgnbd_{k}": round(getattr(derived, k), 6) for k in ("r", "alpha", "a", "b")}
