"""The linear learner in the churn stack (issue 5 lever "diversity, not seeds"): the fitted scorer, its numpy-only
application, its out-of-fold margins, the 4-coefficient stack, and saved models with and without it."""
from __future__ import annotations

import functools
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from training import churn, metrics as M
from training.linear import fit_logistic
from training.member_pyfunc.churn import ChurnModel
from training.member_pyfunc.linear import LinearScorer
from training.member_pyfunc.matrix import FeatureSpec
from tests.test_churn_calibration import _with_time
from tests.test_models_pyfunc import FAST, member_frame


def _xy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, FeatureSpec]:
    df = member_frame(n, seed)
    spec = FeatureSpec.from_frame(df, exclude=churn.NON_FEATURES)
    return spec.matrix(df), df["churn"].to_numpy(float), spec


def test_linear_scorer_learns_the_signal_and_matches_sklearn() -> None:
    from sklearn.linear_model import LogisticRegression

    x, y, spec = _xy(2000, 71)
    scorer = fit_logistic(x, y, spec.categorical_indices, c=0.5)
    assert spec.columns.index("region") not in scorer.columns  # categorical columns are left out
    xt, yt, _ = _xy(1000, 72)
    assert M.auc(yt, scorer(xt)) > 0.7
    ref = LogisticRegression(C=0.5, max_iter=2000).fit(scorer.design(x), y)
    np.testing.assert_allclose(scorer(xt), ref.decision_function(scorer.design(xt)), rtol=1e-6, atol=1e-6)


def test_linear_scorer_fills_missing_and_wild_values_with_training_statistics(tmp_path) -> None:
    x, y, spec = _xy(1500, 73)
    j = spec.columns.index("orders_90d")
    x[::7, j] = np.nan  # some missing in training: the column gets an indicator
    scorer = fit_logistic(x, y, spec.categorical_indices)
    assert scorer.columns.index(j) in scorer.indicators
    wild = x[:20].copy()
    wild[:5, j], wild[5:10, j], wild[10:15, 0] = np.inf, -np.inf, 1e300
    m = scorer(wild)
    assert np.isfinite(m).all()
    np.testing.assert_allclose(m[:10], scorer(np.where(np.arange(x.shape[1]) == j, np.nan, wild[:10])))
    one_by_one = np.concatenate([scorer(x[i:i + 1]) for i in range(50)])
    np.testing.assert_array_equal(one_by_one, scorer(x)[:50])  # online (one row) = batch, to the last bit
    fresh = LinearScorer.load(scorer.save(tmp_path / "linear.json"))
    np.testing.assert_array_equal(fresh(x), scorer(x))


@given(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(0.0)), min_size=6, max_size=6))
@settings(max_examples=60, deadline=None)
def test_linear_margin_is_finite_and_bounded_for_any_row(row) -> None:
    scorer, n = _small_scorer()
    m = scorer(np.array([row[:n]], dtype=np.float64))
    assert np.isfinite(m).all()
    bound = abs(scorer.intercept) + 5.0 * np.abs(scorer.coef[: len(scorer.columns)]).sum() \
        + np.abs(scorer.coef[len(scorer.columns):]).sum()
    assert abs(m[0]) <= bound + 1e-9


@functools.cache
def _small_scorer() -> tuple[LinearScorer, int]:
    x, y, spec = _xy(600, 74)
    return fit_logistic(x, y, spec.categorical_indices), len(spec.columns)


def test_linear_learner_refuses_a_single_class() -> None:
    x, y, spec = _xy(200, 75)
    with pytest.raises(ValueError, match="both classes"):
        fit_logistic(x, np.zeros_like(y), spec.categorical_indices)
    with pytest.raises(ValueError, match="numeric feature"):
        fit_logistic(x[:, [spec.columns.index("region")]], y, [0])


def _frames() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    train = _with_time(member_frame(1500, 81), 1)
    valid = _with_time(member_frame(600, 82, cutoff="2024-03-01"), 2)
    later = _with_time(member_frame(600, 82, cutoff="2024-04-01"), 3)
    return train, valid, pd.concat([train, valid, later], ignore_index=True)


def test_refit_model_stacks_the_linear_learner_and_round_trips(tmp_path) -> None:
    train, valid, refit = _frames()
    cfg = churn.ChurnConfig(**FAST)
    assert cfg.linear_blend
    model, info = churn.fit(train, valid, cfg, refit)
    assert model.linear is not None and len(model.stack) == 4 and info["stack_linear"] == round(model.stack[3], 4)
    test = member_frame(500, 83)
    x = model.spec.matrix(test)
    a, c, b, d = model.stack
    expect = a * model.booster.predict(x, raw_score=True) + c * model.aux.predict(x) + b + d * model.linear(x)
    np.testing.assert_allclose(model.margin(test), expect, rtol=1e-9)
    fresh = ChurnModel()
    fresh.load_context(SimpleNamespace(artifacts=model.save_artifacts(tmp_path / "a")))
    assert fresh.linear is not None
    np.testing.assert_allclose(fresh.predict(None, test)["churn_probability"],
                               model.predict(None, test)["churn_probability"], rtol=1e-9)
    kept, _ = churn.fit(train, valid, cfg.model_copy(update={"calibration_folds": 0}), refit)
    assert kept.linear is not None and len(kept.stack) == 4  # the first model's stack, the refitted linear learner


def test_without_the_linear_blend_the_model_and_its_artifacts_are_the_old_ones(tmp_path) -> None:
    train, valid, refit = _frames()
    model, info = churn.fit(train, valid, churn.ChurnConfig(**FAST, linear_blend=False), refit)
    assert model.linear is None and len(model.stack) == 3 and "stack_linear" not in info
    arts = model.save_artifacts(tmp_path / "a")
    assert "linear" not in arts  # what models saved before the lever hold: they load and score as before
    fresh = ChurnModel()
    fresh.load_context(SimpleNamespace(artifacts=arts))
    test = member_frame(300, 84)
    assert fresh.linear is None
    np.testing.assert_allclose(fresh.predict_proba(test), model.predict_proba(test), rtol=1e-9)


def test_out_of_fold_linear_margins_ignore_the_scored_rows_labels() -> None:
    _, _, rows = _frames()
    cfg = churn.ChurnConfig(**FAST)
    spec = FeatureSpec.from_frame(rows, exclude=churn.NON_FEATURES)
    x, y = spec.matrix(rows), rows["churn"].to_numpy(float)
    m = churn._cross_fit_linear(rows, x, y, spec, cfg)
    held = churn._member_folds(rows["member_id"], cfg.calibration_folds) == 0
    y2 = y.copy()
    y2[held] = np.random.default_rng(0).permutation(y[held])
    m2 = churn._cross_fit_linear(rows, x, y2, spec, cfg)
    np.testing.assert_allclose(m2[held], m[held])
    assert not np.allclose(m2[~held], m[~held])


def test_churn_model_checks_its_stack_against_its_learners() -> None:
    train, valid, refit = _frames()
    model, _ = churn.fit(train, valid, churn.ChurnConfig(**FAST), refit)
    with pytest.raises(ValueError, match="4 coefficients"):
        ChurnModel(model.booster, model.spec, aux=model.aux, stack=model.stack[:3], linear=model.linear)
    with pytest.raises(ValueError, match="3 coefficients"):
        ChurnModel(model.booster, model.spec, aux=model.aux, stack=model.stack)
    with pytest.raises(ValueError, match="needs `aux`"):
        ChurnModel(model.booster, model.spec, linear=model.linear)
