"""The temporal backtest layout shared by the member-level trainers (churn, LTV, timing).

For a test cutoff T and horizon H: the validation cutoff V is the last month start with V + H ≤ T (its label window
ends before the test window starts), training cutoffs are the month starts c with c + H ≤ V (features.training_set.
temporal_split), at most `max_train_cutoffs` of them (the latest). Features are as of each cutoff, labels over
[c, c + H). The model is fitted on the training cutoffs, early-stopped/calibrated on V and tested at T.

With `every_days` the training cutoffs are denser than monthly: V − H, V − H − every_days, … back to the first
cutoff with enough history (more stacked rows from the same history; each still ends its label window by V).

Refit (`refit_cutoffs`): once rounds and settings are chosen on V, every cutoff whose label window ends by T is known
at test time. The refit set is the training cutoffs, the cutoffs between the last of them and V (same step), V, and
any later step with c + H ≤ T: the final model is refitted on all of them (as the recommendation trainer does).
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
    between: pd.DataFrame | None = None  # rows at the refit-only cutoffs (after the training ones, not V)

    def refit_frame(self) -> pd.DataFrame:
        """Training + in-between + validation rows: every row whose label window ends by the test cutoff."""
        parts = [self.train, *([self.between] if self.between is not None else []), self.valid]
        return pd.concat(parts, ignore_index=True)

    def describe(self) -> dict[str, Any]:
        """The §10 `split` block (plus the training layout)."""
        return {"cutoff": self.test_cutoff.strftime("%Y-%m-%d"), "horizon_days": self.horizon_days,
                "members": int(len(self.test)),
                "train_cutoffs": [c.strftime("%Y-%m-%d") for c in self.split.train],
                "validation_cutoff": self.split.validation.strftime("%Y-%m-%d"),
                "train_rows": int(len(self.train)), "validation_rows": int(len(self.valid)),
                **({"refit_cutoffs": sorted(pd.to_datetime(self.refit_frame()["cutoff"]).dt.strftime("%Y-%m-%d")
                                            .unique().tolist()),
                    "refit_rows": int(len(self.refit_frame()))} if self.between is not None else {})}

    def manifest_frame(self, label: str) -> pd.DataFrame:
        """One row per cutoff: role (train/validation/test), rows, label mean: the run's input dataset."""
        rows = []
        roles = (("train", self.train), ("refit_only", self.between), ("validation", self.valid), ("test", self.test))
        for role, df in ((r, d) for r, d in roles if d is not None):
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


def refit_cutoffs(split: TemporalSplit, test_cutoff: object, every_days: int | None = None) -> list[pd.Timestamp]:
    """The cutoffs the final model is refitted on: training ones, the steps after them, V, all with c + H ≤ T.

    Steps continue from the last training cutoff by `every_days` (month starts when None); a cutoff whose label
    window [c, c + H) would run past the test cutoff T is never included.
    """
    t = as_timestamp(test_cutoff, "test_cutoff")
    h = pd.Timedelta(days=split.horizon_days)
    if split.validation + h > t:
        raise ValueError(f"validation cutoff {split.validation.date()} + {split.horizon_days} days runs past the "
                         f"test cutoff {t.date()}")
    last = max(split.train)
    if every_days is None:
        steps = [c for c in monthly_cutoffs(last + pd.Timedelta(days=1), t) if c + h <= t]
    else:
        n = int((t - h - last) // pd.Timedelta(days=every_days))
        steps = [last + pd.Timedelta(days=every_days) * i for i in range(1, n + 1)]
    return sorted({*split.train, *steps, split.validation})


def load(store: Store, cutoff: object, horizon_days: int, *, max_train_cutoffs: int = 12,
         every_days: int | None = None, progress: Callable[[pd.Timestamp], None] | None = None,
         refit: bool = False) -> BacktestData:
    """Build features + labels at every cutoff of the plan and the test cutoff (and the refit-only cutoffs)."""
    t = as_timestamp(cutoff, "cutoff")
    split = plan(store, t, horizon_days, max_train_cutoffs, every_days)
    extra = [c for c in refit_cutoffs(split, t, every_days) if c not in split.train and c != split.validation] \
        if refit else []
    ts = build_training_set(store, [*split.train, *extra, split.validation, t], churn_horizon=horizon_days,
                            ltv_horizon=horizon_days, timing_horizon=horizon_days, progress=progress)
    frame = ts.frame
    cut = pd.to_datetime(frame["cutoff"])
    train, valid = split.split_frame(frame)
    test = frame[cut == t].reset_index(drop=True)
    between = frame[cut.isin(extra)].reset_index(drop=True) if refit else None
    if test.empty:
        raise ValueError(f"no member has a paid order before the test cutoff {t.date()}")
    return BacktestData(train, valid, test, split, t, horizon_days, ts.manifest, between)


def load_with_progress(store: Store, cutoff: object, horizon_days: int, max_train_cutoffs: int,
                       progress: Any = None, every_days: int | None = None, refit: bool = False) -> BacktestData:
    """`load` with a rich progress bar (one step per cutoff) when `progress` is a rich Progress."""
    if progress is None:
        return load(store, cutoff, horizon_days, max_train_cutoffs=max_train_cutoffs, every_days=every_days,
                    refit=refit)
    split = plan(store, cutoff, horizon_days, max_train_cutoffs, every_days)
    n = len(refit_cutoffs(split, cutoff, every_days)) if refit else len(split.train) + 1
    task = progress.add_task("features + labels per cutoff", total=n + 1)
    return load(store, cutoff, horizon_days, max_train_cutoffs=max_train_cutoffs, every_days=every_days,
                progress=lambda _c: progress.advance(task), refit=refit)


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


def refit_rounds(best_iteration: int, scale: float) -> int:
    """Boosting rounds for the refit: the validation-chosen count × `scale` (at least one)."""
    return max(1, int(round(best_iteration * scale)))


def refit_rows(data: BacktestData, enabled: bool) -> pd.DataFrame | None:
    """The refit frame when refitting is on and the data were loaded with the refit-only cutoffs, else None."""
    return data.refit_frame() if enabled and data.between is not None else None


def check_refit_rows(rows: pd.DataFrame, test_cutoff: pd.Timestamp, horizon_days: int) -> None:
    """Refuse refit rows whose label window [c, c + H) runs past the test cutoff (they would leak the test)."""
    late = pd.to_datetime(rows["cutoff"]) + pd.Timedelta(days=horizon_days) > test_cutoff
    if late.any():
        bad = ", ".join(sorted(pd.to_datetime(rows.loc[late, "cutoff"]).dt.strftime("%Y-%m-%d").unique()))
        raise ValueError(f"refit rows at cutoff(s) {bad} have a {horizon_days}-day label window past the test "
                         f"cutoff {test_cutoff.date()}")
