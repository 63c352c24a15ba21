"""Bagged rankers: several LightGBM rankers (seeds / objectives) summed, served as one merged model text."""
from __future__ import annotations

import sys
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.member_pyfunc.recs import FEATURES, RecsArtifacts, recommend
from training.member_pyfunc.tree_predictor import compile_forest
from training.recs.candidates import CandidateConfig
from training.recs.ranker import RankerConfig, merge_models
from training.recs.train import RecsConfig, model_input, run_backtest

sys.path.insert(0, str(Path(__file__).parent))
from fixtures_recs import make_tables  # noqa: E402

SMALL = CandidateConfig(factors=8, iterations=8, knn_k=10, n_hist=50, n_als=20, n_knn=20, n_pop=10)


def _boosters(seed: int, specs: list[tuple[str, int]], n_features: int = 5) -> tuple[list[lgb.Booster], np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.random((1200, n_features)).astype(np.float32)
    X[rng.random(X.shape) < 0.1] = np.nan
    y = (np.nan_to_num(X[:, 0]) + rng.random(len(X)) > 1.0).astype(int)
    out = []
    for k, (objective, rounds) in enumerate(specs):
        params = {"objective": objective, "num_leaves": 7, "min_data_in_leaf": 5, "seed": seed + k, "verbose": -1,
                  "bagging_fraction": 0.7, "bagging_freq": 1, "num_threads": 1}
        out.append(lgb.train(params, lgb.Dataset(X, y, group=[20] * 60), num_boost_round=rounds))
    return out, X


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000),
       specs=st.lists(st.tuples(st.sampled_from(["lambdarank", "rank_xendcg"]), st.integers(1, 25)),
                      min_size=1, max_size=4))
def test_merged_model_scores_the_sum_of_its_members(seed, specs):
    boosters, X = _boosters(seed, specs)
    merged = merge_models([b.model_to_string() for b in boosters])
    mb = lgb.Booster(model_str=merged)
    assert mb.num_trees() == sum(b.num_trees() for b in boosters)
    expected = sum(b.predict(X) for b in boosters)
    np.testing.assert_allclose(mb.predict(X), expected, rtol=0, atol=1e-9)
    compiled, note = compile_forest(merged, [f"Column_{k}" for k in range(X.shape[1])])
    assert compiled is not None, note
    np.testing.assert_allclose(compiled.predict(X), mb.predict(X), rtol=0, atol=1e-12)


def test_merge_refuses_different_feature_lists_and_empty_input():
    a, _ = _boosters(1, [("lambdarank", 3)], n_features=5)
    b, _ = _boosters(2, [("lambdarank", 3)], n_features=4)
    with pytest.raises(ValueError, match="different feature list"):
        merge_models([a[0].model_to_string(), b[0].model_to_string()])
    with pytest.raises(ValueError, match="at least one"):
        merge_models([])
    with pytest.raises(ValueError, match="no trees"):
        merge_models(["tree\nversion=v4\n"])


def test_bag_members_cycle_seeds_and_objectives():
    cfg = RankerConfig(bag=5, seed=3, bag_objectives=["lambdarank", "rank_xendcg"])
    members = cfg.members()
    assert [m.seed for m in members] == [3, 4, 5, 6, 7]
    assert [m.objective for m in members] == ["lambdarank", "rank_xendcg"] * 2 + ["lambdarank"]
    assert all(m.bag == 1 for m in members)
    assert [m.objective for m in RankerConfig(bag=2, objective="rank_xendcg").members()] == ["rank_xendcg"] * 2
    with pytest.raises(ValueError, match="unknown ranking objective"):
        RankerConfig(bag=2, bag_objectives=["binary"]).members()


def test_backtest_serves_the_whole_bag(tmp_path):
    """The kept ranker is every bag member refitted and merged: its tree count is the members' refit rounds, the
    served model (also after a save/load round trip) scores with all of them, and the run says what won."""
    tables = make_tables(n_members=80, n_weeks=16, seed=5)
    cfg = RecsConfig(horizon_days=14, n_train_splits=1, candidates=SMALL, als_grid=[], n_boot=100,
                     ranker=RankerConfig(bag=3, bag_objectives=["lambdarank", "rank_xendcg"], num_threads=1,
                                         min_data_in_leaf=5, num_leaves=7))
    bt = run_backtest(tables, cutoff="2024-04-08", cfg=cfg, baselines=False)
    info = bt.ranker_info
    assert len(info["bag_iterations"]) == 3
    if not info["kept"]:
        pytest.skip("the blend won validation on this tiny data: nothing merged to check")
    art = bt.model.art
    booster = art.booster
    assert booster.num_trees() == sum(max(int(it * 1.1), 10) for it in info["bag_iterations"])
    assert tuple(booster.feature_name()) == FEATURES
    assert info["ranker"]["objectives"] == ["lambdarank", "rank_xendcg", "lambdarank"]
    assert bt.evaluation.extra["ranker"]["bag"] == 3
    assert any(n.startswith("ranker: 3 LightGBM ranker(s) summed") for n in bt.evaluation.notes)
    inp = model_input(bt.final, bt.final.member_ids[:10])
    before = recommend(art, inp, as_of=bt.final.cutoff)
    after = recommend(RecsArtifacts.load(art.save(tmp_path / "art")), inp, as_of=bt.final.cutoff)
    assert before["item_id"].tolist() == after["item_id"].tolist()
    np.testing.assert_allclose(before["score"].to_numpy(), after["score"].to_numpy(), rtol=1e-6, atol=1e-9)


def test_one_se_choice_prefers_the_cheapest_within_the_noise():
    from training.recs.train import one_se_choice

    rng = np.random.default_rng(0)
    idx = pd.Index([f"m{k}" for k in range(400)])
    base = pd.Series(rng.random(400), index=idx)
    near = base - 0.001 + rng.normal(0, 0.05, 400)  # within the noise of the best
    far = base - 0.2  # clearly worse, however cheap
    assert one_se_choice([base, near, far], [100.0, 10.0, 1.0], 1.0) == 1
    assert one_se_choice([base, near, far], [100.0, 10.0, 1.0], 0.0) == int(np.argmax([base.mean(), near.mean()]))
    assert one_se_choice([base, base.copy()], [5.0, 5.0], 1.0) == 0  # equal cost: the earlier setting
    with pytest.raises(ValueError):
        one_se_choice([base], [1.0, 2.0], 1.0)


def test_leaf_budget_excludes_costly_settings_unless_none_fits():
    from training.recs.train import one_se_choice

    rng = np.random.default_rng(1)
    idx = pd.Index([f"m{k}" for k in range(300)])
    cheap = pd.Series(rng.random(300), index=idx)
    better = cheap + 0.1  # clearly better but over the budget
    assert one_se_choice([cheap, better], [100.0, 1000.0], 1.0) == 1
    assert one_se_choice([cheap, better], [100.0, 1000.0], 1.0, budget=500) == 0
    assert one_se_choice([cheap, better], [600.0, 1000.0], 1.0, budget=500) == 1  # none fits: all compete
