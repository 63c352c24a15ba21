"""The LTV extra-trees blend (issue 5 lever "diversity, not seeds"): a second bag of Tweedie boosters with extremely
randomised splits, blended in log space with weight w; in currency, never negative, saved and refitted with the
model; models saved before it load unchanged."""
from __future__ import annotations

import functools
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from training import ltv
from training.member_pyfunc.ltv import EXTRA_ROLE, LtvModel, part_name

from tests.test_ltv_levers import FAST
from tests.test_models_pyfunc import member_frame

BLEND = {**FAST, "extra_trees_weight": 0.2}


@pytest.fixture(scope="module")
def fitted() -> tuple[LtvModel, dict, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    train, valid, test = member_frame(1200, 91), member_frame(500, 92), member_frame(400, 93)
    model, info = ltv.fit(train, valid, ltv.LtvConfig(kind="tweedie", bags=2, **BLEND))
    return model, info, train, valid, test


def test_blend_is_the_weighted_geometric_mean_of_both_bags(fitted):
    model, info, *_, test = fitted
    assert sorted(model.boosters) == sorted(part_name(r, b) for r in ("value", EXTRA_ROLE) for b in range(2))
    assert model.extra_weight == info["extra_trees_weight"] == 0.2
    x = model._matrix(test)
    plain = LtvModel("tweedie", {p: b for p, b in model.boosters.items() if not p.startswith(EXTRA_ROLE)},
                     model.spec)._value(x)
    extra = np.mean([model.boosters[part_name(EXTRA_ROLE, b)].predict(x) for b in range(2)], axis=0)
    np.testing.assert_allclose(model.predict_value(test), plain ** 0.8 * extra ** 0.2, rtol=1e-9)
    assert not np.allclose(extra, plain)  # a different learner, not a copy
    assert "[extra_trees: 1]" in model.boosters[EXTRA_ROLE].model_to_string()
    assert "[extra_trees: 0]" in model.boosters["value"].model_to_string()


@given(st.floats(0.0, 0.95))
@settings(max_examples=15, deadline=None)
def test_blend_is_never_negative_and_finite_for_wild_rows(w):
    model, test = _small()
    wild = test.head(50).copy()
    wild.loc[:20, ["recency_days", "orders_90d", "spend_trend"]] = [1e7, -50.0, 1e9]
    wild.loc[21:, "gap_mean_days"] = np.nan
    blended = LtvModel("tweedie", model.boosters, model.spec, extra_weight=w)
    v = blended.predict(None, wild)["ltv"].to_numpy()
    assert np.isfinite(v).all() and (v >= 0).all()


@functools.cache
def _small() -> tuple[LtvModel, pd.DataFrame]:
    """A small blended model for the property test (hypothesis cannot take a pytest fixture)."""
    train, valid, test = member_frame(600, 94), member_frame(300, 95), member_frame(100, 96)
    return ltv.fit(train, valid, ltv.LtvConfig(kind="tweedie", bags=1, **BLEND))[0], test


def test_blended_model_round_trips_and_old_models_load(fitted, tmp_path):
    model, _, *_, test = fitted
    fresh = LtvModel()
    fresh.load_context(SimpleNamespace(artifacts=model.save_artifacts(tmp_path / "a")))
    assert fresh.extra_weight == 0.2
    np.testing.assert_allclose(fresh.predict(None, test)["ltv"], model.predict(None, test)["ltv"], rtol=1e-9)
    old = LtvModel("tweedie", {"value": model.boosters["value"]}, model.spec)
    arts = old.save_artifacts(tmp_path / "old")
    meta = tmp_path / "old" / "ltv.json"  # a model saved before the lever has no extra_weight key
    d = json.loads(meta.read_text())
    del d["extra_weight"]
    meta.write_text(json.dumps(d))
    fresh_old = LtvModel()
    fresh_old.load_context(SimpleNamespace(artifacts=arts))
    assert fresh_old.extra_weight == 0.0
    np.testing.assert_allclose(fresh_old.predict_value(test), model.boosters["value"].predict(model._matrix(test)),
                               rtol=1e-9)


def test_refit_keeps_the_blend_and_each_parts_tree_count(fitted):
    model, _, train, valid, _ = fitted
    refit = pd.concat([train, member_frame(400, 97, cutoff="2024-02-01"), valid], ignore_index=True)
    again, info = ltv.fit(train, valid, ltv.LtvConfig(kind="tweedie", bags=2, refit_rounds_scale=1.0, **BLEND), refit)
    assert again.extra_weight == 0.2 and sorted(again.boosters) == sorted(model.boosters)
    for part, b in again.boosters.items():
        assert b.num_trees() == info[f"refit_trees_{part}"] == model.boosters[part].num_trees()


def test_two_part_and_bad_weights_have_no_blend(fitted):
    model, *_ = fitted
    train, valid = member_frame(800, 98), member_frame(300, 99)
    two, info = ltv.fit(train, valid, ltv.LtvConfig(kind="two_part", bags=1, **BLEND))
    assert two.extra_weight == 0.0 and not any(p.startswith(EXTRA_ROLE) for p in two.boosters)
    with pytest.raises(ValueError, match="extra_weight"):
        LtvModel("tweedie", {"value": model.boosters["value"]}, model.spec, extra_weight=0.2)
    with pytest.raises(ValueError, match="extra_weight"):
        LtvModel("tweedie", model.boosters, model.spec, extra_weight=1.0)
    with pytest.raises(ValueError, match="extra_trees_weight"):
        ltv.load_config(None, extra_trees_weight=1.0)
