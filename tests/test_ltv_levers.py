"""LTV levers (issue 5): seed bagging, early stopping on the validation Gini, never-negative predictions, the saved
model's round trip, and the split block reporting only what was done."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from training import ltv, metrics as M
from training.member_pyfunc.ltv import ROLES, LtvModel, part_name, part_role

from tests.test_models_pyfunc import member_frame

FAST = dict(horizon_days=60, num_boost_round=60, early_stopping_rounds=10, n_boot=50, bgnbd_features=False,
            extra_trees_weight=0.0)  # the extra-trees blend has its own tests (test_ltv_extra_trees.py)


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return member_frame(1200, 61), member_frame(500, 62), member_frame(400, 63)


@given(st.sampled_from(["value", "buy", "spend"]), st.integers(0, 60))
@settings(max_examples=50, deadline=None)
def test_part_names_round_trip(role, bag):
    assert part_role(part_name(role, bag)) == role
    assert (part_name(role, bag) == role) == (bag == 0)


@pytest.mark.parametrize("kind", ["tweedie", "two_part"])
def test_bagged_model_averages_its_seeds_and_is_never_negative(frames, kind):
    train, valid, test = frames
    model, info = ltv.fit(train, valid, ltv.LtvConfig(kind=kind, bags=3, **FAST))
    assert info["bags"] == 3 and info["kind"] == kind
    assert sorted(model.boosters) == sorted(part_name(r, b) for r in ROLES[kind] for b in range(3))
    x = model._matrix(test)
    seeds = [LtvModel(kind, {r: model.boosters[part_name(r, b)] for r in ROLES[kind]}, model.spec)._value(x)
             for b in range(3)]
    assert not np.allclose(seeds[0], seeds[1])  # different seeds give different boosters
    if kind == "tweedie":
        np.testing.assert_allclose(model.predict_value(test), np.mean(seeds, axis=0), rtol=1e-9)
    wild = test.copy()
    wild.loc[:40, ["recency_days", "orders_90d", "spend_trend"]] = [1e7, -50.0, 1e9]
    wild.loc[41:60, "gap_mean_days"] = np.nan
    v = model.predict(None, wild)["ltv"].to_numpy()
    assert np.isfinite(v).all() and (v >= 0).all() and v.max() > 0


def test_early_stopping_on_gini_keeps_the_gini_best_iteration(frames):
    train, valid, _ = frames
    cfg = ltv.LtvConfig(kind="tweedie", bags=1, **{**FAST, "num_boost_round": 300, "early_stopping_rounds": 15})
    spec = ltv.FeatureSpec.from_frame(train, exclude=ltv.NON_FEATURES)
    x, xv = spec.matrix(train), spec.matrix(valid)
    y, yv = train["ltv"].to_numpy(float), valid["ltv"].to_numpy(float)
    b = ltv._boost(cfg, "tweedie", x, y, xv, yv, spec, "tweedie")
    n = b.num_trees()
    assert 1 <= n < 300
    curve = [M.gini(yv, b.predict(xv, num_iteration=i)) for i in range(1, n + 1)]
    assert curve[-1] == pytest.approx(max(curve))  # the kept trees end at the best validation Gini seen
    by_loss = ltv._boost(cfg.model_copy(update={"early_stopping_metric": "objective"}), "tweedie", x, y, xv, yv,
                         spec, "tweedie")
    assert by_loss.num_trees() != n or not np.allclose(by_loss.predict(xv), b.predict(xv))


def test_bagged_model_survives_save_and_load(frames, tmp_path):
    train, valid, test = frames
    model, _ = ltv.fit(train, valid, ltv.LtvConfig(kind="two_part", bags=2, **FAST))
    fresh = LtvModel()
    fresh.load_context(SimpleNamespace(artifacts=model.save_artifacts(tmp_path / "a")))
    assert fresh.kind == "two_part" and sorted(fresh.boosters) == sorted(model.boosters)
    np.testing.assert_allclose(fresh.predict(None, test)["ltv"], model.predict(None, test)["ltv"])


def test_bagged_refit_keeps_each_seeds_tree_count(frames):
    train, valid, _ = frames
    refit = pd.concat([train, member_frame(400, 64, cutoff="2024-02-01"), valid], ignore_index=True)
    cfg = ltv.LtvConfig(kind="tweedie", bags=2, refit_rounds_scale=1.0, **FAST)
    first, _ = ltv.fit(train, valid, cfg)
    model, info = ltv.fit(train, valid, cfg, refit)
    assert sorted(model.boosters) == ["value", "value_b1"]
    for part, b in model.boosters.items():
        assert b.num_trees() == info[f"refit_trees_{part}"] == first.boosters[part].num_trees()


def test_model_refuses_boosters_that_do_not_fit_its_kind(frames):
    train, valid, _ = frames
    model, _ = ltv.fit(train, valid, ltv.LtvConfig(kind="tweedie", bags=1, **FAST))
    with pytest.raises(ValueError, match="needs booster"):
        LtvModel("two_part", {"buy": model.boosters["value"]}, model.spec)


@pytest.mark.parametrize("bad", [{"bags": 0}, {"early_stopping_metric": "auc"}])
def test_config_rejects_bad_lever_values(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        ltv.load_config(None, **bad)
