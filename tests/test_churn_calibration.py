"""The refit churn model is calibrated on its own cross-fitted margins (training/churn.py `_cross_fit`), not on the
first model's: member folds, out-of-fold scores that ignore the scored rows' labels, calibrated means."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training import churn
from training.member_pyfunc.matrix import FeatureSpec
from tests.test_models_pyfunc import FAST, member_frame


def _with_time(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = df.copy()
    out["days_to_next"] = np.where(out["churn"] > 0, 60.0, rng.exponential(out["gap_mean_days"].to_numpy() / 2))
    return out


def _frames() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    train = _with_time(member_frame(1500, 51), 1)
    valid = _with_time(member_frame(600, 52, cutoff="2024-03-01"), 2)
    # the same members again at a later cutoff (a member's rows at several cutoffs must share a fold)
    later = _with_time(member_frame(600, 52, cutoff="2024-04-01"), 3)
    return train, valid, pd.concat([train, valid, later], ignore_index=True)


def test_refit_model_is_calibrated_on_its_own_cross_fitted_margins() -> None:
    train, valid, refit = _frames()
    cfg = churn.ChurnConfig(**FAST)
    first, _ = churn.fit(train, valid, cfg)
    model, info = churn.fit(train, valid, cfg, refit)
    assert cfg.calibration_folds == 3 and "cross-fitted" in info["calibration"]
    assert info["calibration_rows"] == len(refit)
    assert model.calibrator != first.calibrator and model.stack != first.stack
    test = member_frame(3000, 53)
    p = model.predict_proba(test)
    assert abs(p.mean() - test["churn"].mean()) < 0.03  # calibrated on rows like these, scored out of fold
    kept, info0 = churn.fit(train, valid, cfg.model_copy(update={"calibration_folds": 0}), refit)
    assert kept.calibrator == first.calibrator and kept.stack == first.stack and "calibration" not in info0
    last, info1 = churn.fit(train, valid, cfg.model_copy(update={"calibration_cutoffs": 1}), refit)
    assert info1["calibration_rows"] == 600  # only the latest refit cutoff's rows fit the calibration


def test_out_of_fold_margins_ignore_the_scored_rows_labels() -> None:
    _, _, rows = _frames()
    cfg = churn.ChurnConfig(**FAST)
    spec = FeatureSpec.from_frame(rows, exclude=churn.NON_FEATURES)
    x, y = spec.matrix(rows), rows["churn"].to_numpy(float)
    yt = churn._time_target(rows, 60)
    folds = churn._member_folds(rows["member_id"], cfg.calibration_folds)
    mar, apr = ((rows["cutoff"] == pd.Timestamp(c)).to_numpy() for c in ("2024-03-01", "2024-04-01"))
    assert (rows["member_id"][mar].to_numpy() == rows["member_id"][apr].to_numpy()).all()
    np.testing.assert_array_equal(folds[mar], folds[apr])  # a member's rows at both cutoffs sit in one fold
    m, a, use = churn._cross_fit(rows, x, y, yt, spec, cfg, 30, 30)
    assert use.all() and np.isfinite(m).all() and np.isfinite(a).all()
    held = folds == 0
    y2, yt2 = y.copy(), yt.copy()
    rng = np.random.default_rng(0)
    y2[held], yt2[held] = rng.permutation(y[held]), rng.permutation(yt[held])
    m2, a2, _ = churn._cross_fit(rows, x, y2, yt2, spec, cfg, 30, 30)
    np.testing.assert_allclose(m2[held], m[held])  # fold 0 is scored by boosters that never saw its labels
    np.testing.assert_allclose(a2[held], a[held])
    assert not np.allclose(m2[~held], m[~held])  # the other folds did train on them


@pytest.mark.parametrize("folds", [2, 5])
def test_member_folds_cover_every_fold(folds: int) -> None:
    ids = pd.Series([f"m{i}" for i in range(400)], dtype="string")
    f = churn._member_folds(ids, folds)
    assert set(np.unique(f)) == set(range(folds))
    np.testing.assert_array_equal(f[::-1], churn._member_folds(ids[::-1], folds))  # a member's fold is its id's
