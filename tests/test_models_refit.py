"""Refit on every cutoff whose label window ends by the test cutoff, and the churn time-to-next stacking (issue 5)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from features.training_set import TemporalSplit
from training import backtest, churn, ltv
from training.member_pyfunc.churn import ChurnModel
from training.member_pyfunc.ltv import LtvModel
from tests.fixtures_models import make_model_store
from tests.test_models_pyfunc import FAST, member_frame


@settings(max_examples=60, deadline=None)
@given(horizon=st.integers(7, 120), gap=st.integers(0, 60), n_train=st.integers(1, 8),
       every=st.one_of(st.none(), st.integers(3, 35)), start=st.dates(pd.Timestamp("2015-01-01").date(),
                                                                         pd.Timestamp("2030-01-01").date()))
def test_refit_cutoffs_never_pass_the_test_cutoff(horizon, gap, n_train, every, start):
    h = pd.Timedelta(days=horizon)
    train = [pd.Timestamp(start) + pd.Timedelta(days=14 * i) for i in range(n_train)]
    valid = max(train) + h + pd.Timedelta(days=gap % 20)
    test = valid + h + pd.Timedelta(days=gap)
    split = TemporalSplit(train, valid, horizon)
    cuts = backtest.refit_cutoffs(split, test, every)
    assert all(c + h <= test for c in cuts)  # no refit label window runs past the test cutoff
    assert set(train) <= set(cuts) and valid in cuts and cuts == sorted(set(cuts))
    assert all(c > max(train) for c in set(cuts) - set(train))  # only later cutoffs are added


def test_refit_cutoffs_refuse_a_validation_window_past_the_test():
    split = TemporalSplit([pd.Timestamp("2024-01-01")], pd.Timestamp("2024-03-01"), 60)
    with pytest.raises(ValueError, match="runs past the test cutoff"):
        backtest.refit_cutoffs(split, pd.Timestamp("2024-04-01"))


def test_check_refit_rows_names_the_leaking_cutoff():
    rows = pd.DataFrame({"cutoff": pd.to_datetime(["2024-01-01", "2024-03-15"])})
    backtest.check_refit_rows(rows.iloc[:1], pd.Timestamp("2024-04-01"), 60)
    with pytest.raises(ValueError, match=r"2024-03-15.*past the test cutoff 2024-04-01"):
        backtest.check_refit_rows(rows, pd.Timestamp("2024-04-01"), 60)


def test_loaded_refit_rows_end_their_label_windows_by_the_test_cutoff(tmp_path):
    store = make_model_store(tmp_path / "s", n_members=150, seed=3)
    t, h = pd.Timestamp("2024-01-01"), 60
    data = backtest.load(store, t, h, max_train_cutoffs=3, every_days=14, refit=True)
    rows = data.refit_frame()
    cut = pd.to_datetime(rows["cutoff"])
    assert (cut + pd.Timedelta(days=h) <= t).all()
    assert cut.max() > max(data.split.train)  # the refit really adds later cutoffs
    assert len(rows) == len(data.train) + len(data.between) + len(data.valid)
    info = data.describe()
    assert info["refit_rows"] == len(rows) and info["refit_cutoffs"][-1] <= str(t.date())
    assert set(data.manifest_frame("churn")["role"]) == {"train", "refit_only", "validation", "test"}
    plain = backtest.load(store, t, h, max_train_cutoffs=3, every_days=14)
    assert plain.between is None and backtest.refit_rows(plain, True) is None


def _with_time(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Give the test frames a days-to-next label tied to churn (churners are censored at the horizon)."""
    rng = np.random.default_rng(seed)
    out = df.copy()
    out["days_to_next"] = np.where(out["churn"] > 0, 60.0, rng.exponential(out["gap_mean_days"].to_numpy() / 2))
    out["days_to_next"] = out["days_to_next"].clip(0, 60)
    out["next_observed"] = (out["churn"] == 0).astype(float)
    return out


def test_churn_refit_and_stacking_round_trip(tmp_path):
    train, valid = _with_time(member_frame(1500, 21), 1), _with_time(member_frame(600, 22), 2)
    later = _with_time(member_frame(600, 23, cutoff="2024-02-01"), 3)
    refit = pd.concat([train, later, valid], ignore_index=True)
    cfg = churn.ChurnConfig(**FAST)
    first, _ = churn.fit(train, valid, cfg)
    model, info = churn.fit(train, valid, cfg, refit)
    assert model.aux is not None and model.stack is not None and info["time_to_next_trees"] > 0
    assert info["refit_rows"] == len(refit) and info["refit_rounds"] == info["best_iteration"]
    assert model.booster.current_iteration() == info["refit_rounds"]
    assert model.calibrator != first.calibrator  # cross-fitted on the refit model's margins (test_churn_calibration)
    test = member_frame(300, 24)
    p = model.predict_proba(test)
    assert ((p > 0) & (p < 1)).all()
    assert not np.allclose(p, first.predict_proba(test))  # the refit booster is a different model
    arts = model.save_artifacts(tmp_path / "a")
    fresh = ChurnModel()
    fresh.load_context(SimpleNamespace(artifacts=arts))
    np.testing.assert_allclose(fresh.predict(None, test)["churn_probability"], model.predict(None, test)
                               ["churn_probability"], rtol=1e-9)


def test_churn_without_time_label_has_no_stack():
    train, valid = member_frame(800, 31).drop(columns="days_to_next"), member_frame(400, 32)
    model, info = churn.fit(train, valid, churn.ChurnConfig(**FAST))
    assert model.aux is None and model.stack is None and "stack_time_to_next" not in info
    with pytest.raises(ValueError, match="both `aux` and `stack`"):
        ChurnModel(model.booster, model.spec, aux=model.booster)


@pytest.mark.parametrize("kind", ["tweedie", "two_part"])
def test_ltv_refit_keeps_kind_and_scales_trees(kind):
    train, valid = member_frame(1500, 41), member_frame(600, 42)
    refit = pd.concat([train, member_frame(600, 43, cutoff="2024-02-01"), valid], ignore_index=True)
    cfg = ltv.LtvConfig(kind=kind, refit_rounds_scale=1.5, **FAST)
    first, _ = ltv.fit(train, valid, cfg)
    model, info = ltv.fit(train, valid, cfg, refit)
    assert isinstance(model, LtvModel) and model.kind == kind and info["refit_rows"] == len(refit)
    for part, b in model.boosters.items():
        assert b.num_trees() == info[f"refit_trees_{part}"] == max(1, round(first.boosters[part].num_trees() * 1.5))
    assert (model.predict_value(member_frame(200, 44)) >= 0).all()


def test_ltv_split_reports_refit_only_when_it_refits(tmp_path):
    store = make_model_store(tmp_path / "s", n_members=200, seed=5)
    data = backtest.load(store, "2024-01-01", 60, max_train_cutoffs=3, every_days=14, refit=True)
    fast = dict(num_boost_round=30, early_stopping_rounds=10, n_boot=50, horizon_days=60, kind="tweedie")
    off, *_ = ltv.run_backtest(store, cutoff="2024-01-01", cfg=ltv.LtvConfig(**fast), with_bgnbd=False, data=data)
    on, *_ = ltv.run_backtest(store, cutoff="2024-01-01", cfg=ltv.LtvConfig(refit=True, **fast), with_bgnbd=False,
                              data=data)
    assert "refit_rows" not in off.split and "refit_rows" not in off.extra["fit"]
    assert on.split["refit_rows"] == on.extra["fit"]["refit_rows"] == len(data.refit_frame())
