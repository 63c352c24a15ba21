"""Training the next-purchase timing model: a LightGBM discrete-time hazard on stacked cutoffs.

Why a discrete-time hazard (recorded as the run's `approach` tag): a person-period expansion turns survival into a
plain binary problem that LightGBM fits well (any feature interactions, no proportional-hazards assumption), the CDF
1 − Π(1 − h_k) is monotone in d by construction (no crossing per-horizon classifiers), and censoring is respected
exactly: a member seen for c days contributes only the bins inside those c days, so members without an order in
the window are never negatives at horizons they were not observed for. Day bins are daily for two weeks (the
resolution at which weekly shoppers differ), then widen to the horizon; elapsed days since the last order at each bin
(and elapsed ÷ the member's mean gap) are added per row, the clock a replenishing customer runs on.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from training.member_pyfunc.matrix import FeatureSpec
from training.member_pyfunc.timing import TimingModel
from training.member_pyfunc.timing_hazard import (ROLES, expand_person_period, person_period_matrix,
                                                  pp_feature_names, role_indices)
from training.timing.config import REPORT_DAYS, TimingConfig

DURATION = "days_to_next"
EVENT = "next_observed"
#: Columns of a training set that are never features (ids, cutoffs, every label).
NON_FEATURES: frozenset[str] = frozenset({"member_id", "cutoff", "as_of", "churn", "ltv", DURATION, EVENT})

APPROACH = "lightgbm-discrete-time-hazard"
APPROACH_WHY = (
    "LightGBM discrete-time hazard: person-period rows over day bins to the horizon (daily to 14 d, then wider); "
    "P(order within d) = 1 - prod(1 - h_k) is monotone by construction; censored members contribute only the bins "
    "they were observed in (never negatives past their censoring time); elapsed days since the last order per bin "
    "lets trees model each member's own purchase clock. Chosen over one classifier per horizon (crossing CDFs, "
    "censoring ignored) and over a horizon-as-monotone-feature classifier (duplicates every member per horizon and "
    "still treats censored members as negatives).")


@dataclass
class FitResult:
    """The fitted pyfunc model and how training went."""

    model: TimingModel
    best_iteration: int
    train_rows: int
    valid_rows: int
    valid_logloss: float | None
    importance: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))


def lgb_params(config: TimingConfig) -> dict[str, Any]:
    h = config.hazard
    return {
        "objective": "binary", "learning_rate": h.learning_rate, "num_leaves": h.num_leaves,
        "min_data_in_leaf": h.min_data_in_leaf, "feature_fraction": h.feature_fraction,
        "bagging_fraction": h.bagging_fraction, "bagging_freq": 1 if h.bagging_fraction < 1 else 0,
        "lambda_l2": h.lambda_l2, "seed": h.seed, "deterministic": True, "force_row_wise": True,
        "num_threads": h.num_threads, "verbose": -1,
    }


def _check_training_frame(frame: pd.DataFrame, name: str) -> None:
    missing = [c for c in ("member_id", DURATION, EVENT) if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} frame is missing column(s) {missing} (build it with "
                         "features.training_set.build_training_set)")
    if frame.empty:
        raise ValueError(f"{name} frame has no rows")
    d = pd.to_numeric(frame[DURATION], errors="coerce")
    if d.isna().any() or (d < 0).any():
        raise ValueError(f"{name} frame: {DURATION} must be a non-negative number of days (found null or negative)")


def person_period(frame: pd.DataFrame, spec: FeatureSpec, edges: Sequence[float],
                  idx: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(person-period matrix, 0/1 targets) for a frame with features, days_to_next and next_observed."""
    x = spec.matrix(frame)
    member, k, y = expand_person_period(frame[DURATION].to_numpy(dtype="float64"),
                                        frame[EVENT].to_numpy(dtype="float64") > 0.5, edges)
    return person_period_matrix(x, member, k, edges, idx), y


def fit_timing_model(train: pd.DataFrame, valid: pd.DataFrame | None = None, *,
                     config: TimingConfig | None = None, refit: pd.DataFrame | None = None,
                     exclude: Sequence[str] = ()) -> FitResult:
    """Fit the hazard booster on `train` (stacked cutoffs: features + days_to_next + next_observed).

    With `valid` (a later cutoff), the number of boosting rounds is chosen by early stopping on it and the booster is
    then refitted with that many rounds on `refit` (default: train + valid), so the latest cutoffs, the most
    informative ones, shape the final model (`refit` may add cutoffs whose windows are censored at the test cutoff).
    """
    import lightgbm as lgb

    config = config or TimingConfig()
    _check_training_frame(train, "training")
    if valid is not None:
        _check_training_frame(valid, "validation")
    edges = [float(e) for e in config.hazard.edges()]
    spec = FeatureSpec.from_frame(train, exclude=set(NON_FEATURES) | set(exclude))
    if not spec.columns:
        raise ValueError("training frame has no feature columns")
    roles = {**ROLES, "recency": config.hazard.recency_feature, "gap": config.hazard.gap_feature}
    idx = role_indices(spec.columns, roles)
    names = pp_feature_names(spec.columns, idx)
    params = lgb_params(config)
    cat = spec.categorical_indices

    def dataset(frame: pd.DataFrame, reference: Any = None) -> tuple[Any, int]:
        x, y = person_period(frame, spec, edges, idx)
        return lgb.Dataset(x, label=y, feature_name=names, categorical_feature=cat, reference=reference,
                           free_raw_data=True), len(y)

    dtrain, n_train = dataset(train)
    best_iter = config.hazard.num_boost_round
    valid_rows, valid_logloss = 0, None
    if valid is not None:
        dvalid, valid_rows = dataset(valid, reference=dtrain)
        booster = lgb.train(params, dtrain, num_boost_round=config.hazard.num_boost_round, valid_sets=[dvalid],
                            valid_names=["valid"],
                            callbacks=[lgb.early_stopping(config.hazard.early_stopping_rounds, verbose=False)])
        best_iter = max(int(booster.best_iteration or config.hazard.num_boost_round), 1)
        valid_logloss = float(booster.best_score["valid"]["binary_logloss"])
        full = refit if refit is not None else pd.concat([train, valid], ignore_index=True)
        _check_training_frame(full, "refit")
        dfull, n_train = dataset(full)
        booster = lgb.train(params, dfull, num_boost_round=best_iter)
    else:
        booster = lgb.train(params, dtrain, num_boost_round=best_iter)
    meta = {
        "edges": edges, "max_days": float(config.hazard.max_days), "report_days": list(REPORT_DAYS),
        "roles": roles,
        "replenishment": config.replenishment.to_dict(), "approach": APPROACH,
    }
    importance = pd.Series(booster.feature_importance("gain"), index=names).sort_values(ascending=False)
    return FitResult(TimingModel(booster, spec, meta), best_iter, n_train, valid_rows, valid_logloss, importance)
