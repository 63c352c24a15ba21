"""The recs one-member latency path: the compiled ranker gives LightGBM's scores, the cheap column reads give the
pandas conversions' numbers, the one-group sort gives lexsort's order, and one member's recommendations (items,
order, scores, reasons) equal the reference path (the all-members batch scored by LightGBM)."""
from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import training.member_pyfunc.recs as recs_mod
from training.member_pyfunc import frame_columns
from training.member_pyfunc.recs import (
    FEATURES, RecsModel, _solve_batched, bm25_confidence, build_candidates, group_rank, prepare_history, recommend,
    score_candidates, strength, summarise_history, top_items)
from training.member_pyfunc.tree_predictor import compile_forest, pack_lightgbm
from training.recs.candidates import CandidateConfig, fit_candidates
from training.recs.ranker import RankerConfig, rank_frame, train_ranker
from training.recs.train import model_input

sys.path.insert(0, str(Path(__file__).parent))
from fixtures_recs import make_tables  # noqa: E402

SMALL = CandidateConfig(factors=8, iterations=8, knn_k=10, n_hist=50, n_als=20, n_knn=20, n_pop=10)
CUTOFF = "2024-04-08"


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return make_tables(n_members=80, n_weeks=18, seed=5)


@pytest.fixture(scope="module")
def ranked(tables):
    """A small trained model with a LightGBM lambdarank ranker over the full feature list."""
    fc = fit_candidates(tables, CUTOFF, SMALL)
    o = tables["orders"]
    cut = pd.Timestamp(CUTOFF)
    truth = o[(o["ordered_at"] >= cut) & (o["ordered_at"] < cut + pd.Timedelta(days=21))]
    frame = rank_frame(fc, truth)
    booster, _ = train_ranker([frame], None, RankerConfig(num_leaves=15, min_data_in_leaf=5, num_threads=1),
                              num_boost_round=60)
    art = dataclasses.replace(fc.art, ranker=booster.model_to_string())
    return fc, art, frame


def _messy_rows(X: np.ndarray, seed: int) -> np.ndarray:
    """Real candidate rows plus NaNs, zeros, ±inf, tiny and huge values: every branch of LightGBM's decision."""
    rng = np.random.default_rng(seed)
    Y = np.vstack([X] * 4).astype(np.float32)
    Y[rng.random(Y.shape) < 0.15] = np.nan
    Y[rng.random(Y.shape) < 0.05] = 0.0
    Y[rng.random(Y.shape) < 0.01] = np.float32(1e-36)
    Y[rng.random(Y.shape) < 0.01] = np.inf
    Y[rng.random(Y.shape) < 0.01] = -np.inf
    Y[rng.random(Y.shape) < 0.05] *= np.float32(1e6)
    return Y


def test_compiled_ranker_equals_lightgbm_on_candidate_rows(ranked):
    fc, art, frame = ranked
    booster = art.booster
    predictor, note = compile_forest(art.ranker, FEATURES)
    assert predictor is not None, note
    X = _messy_rows(frame.cand.X, seed=0)
    assert len(X) >= 2000
    ours, theirs = predictor.predict(X), booster.predict(X, num_threads=1)
    assert np.max(np.abs(ours - theirs)) <= 1e-9
    # identical top-10 order per member on the real rows
    groups = frame.cand.m
    for X_, s in ((frame.cand.X, predictor.predict(frame.cand.X)),):
        ref = booster.predict(X_, num_threads=1)
        o1, r1 = group_rank(groups, s)
        o2, r2 = group_rank(groups, ref)
        assert np.array_equal(o1[r1 < 10], o2[r2 < 10])


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), leaves=st.sampled_from([2, 7, 31]), nan_share=st.floats(0, 0.5),
       objective=st.sampled_from(["regression", "lambdarank", "rank_xendcg"]))
def test_compiled_forest_equals_lightgbm_on_random_models(seed, leaves, nan_share, objective):
    """Random data and settings, features read from a reordered matrix with an extra column (by name)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(400, 5)).astype(np.float32) * np.float32(10.0) ** rng.integers(-3, 4, size=5)
    X[rng.random(X.shape) < nan_share] = np.nan
    X[rng.random(X.shape) < 0.1] = 0.0
    y = (np.nan_to_num(X[:, 0]) > 0).astype(float) + (rng.random(400) < 0.3)
    names = [f"f{k}" for k in range(5)]
    params = {"objective": objective, "num_leaves": leaves, "min_data_in_leaf": 3, "verbose": -1,
              "num_threads": 1, "seed": seed}
    ds = lgb.Dataset(X, y, feature_name=names, group=None if objective == "regression" else [40] * 10)
    booster = lgb.train(params, ds, num_boost_round=int(rng.integers(1, 25)))
    cols = ["extra", *names[::-1]]
    predictor, note = compile_forest(booster.model_to_string(), cols)
    assert predictor is not None, note
    Xc = np.column_stack([np.ones(len(X)), X[:, ::-1]]).astype(np.float32)
    Xt = _messy_rows(X, seed)
    Xtc = np.column_stack([np.ones(len(Xt)), Xt[:, ::-1]]).astype(np.float32)
    assert np.max(np.abs(predictor.predict(Xc) - booster.predict(X, num_threads=1))) <= 1e-9
    assert np.max(np.abs(predictor.predict(Xtc) - booster.predict(Xt, num_threads=1))) <= 1e-9


def test_unsupported_models_fall_back_to_lightgbm_and_say_so(ranked, caplog):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 3))
    binary = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 4}, lgb.Dataset(X, X[:, 0] > 0),
                       num_boost_round=3)
    predictor, note = compile_forest(binary.model_to_string(), ["Column_0", "Column_1", "Column_2"])
    assert predictor is None and "binary" in note and "LightGBM" in note
    cat = lgb.train({"objective": "regression", "verbose": -1, "num_leaves": 4, "min_data_per_group": 1,
                     "cat_smooth": 1}, lgb.Dataset(np.c_[rng.integers(0, 5, 300), X[:, 1]], X[:, 0],
                                                  categorical_feature=[0]), num_boost_round=3)
    assert compile_forest(cat.model_to_string(), ["Column_0", "Column_1"])[0] is None
    assert compile_forest(binary.model_to_string(), ["Column_0"])[0] is None  # a feature the matrix lacks
    # the model falls back to LightGBM with a warning, and scores the same
    fc, art, frame = ranked
    hacked = dataclasses.replace(art, ranker=art.ranker.replace("objective=lambdarank", "objective=binary sigmoid:1",
                                                                1))
    with caplog.at_level(logging.WARNING):
        assert hacked.predictor is None
    assert "scoring with LightGBM" in caplog.text
    s = score_candidates(hacked, frame.cand)
    assert np.allclose(s, hacked.booster.predict(frame.cand.X, num_threads=1), rtol=0, atol=0)


def test_ranker_reads_its_own_feature_list(ranked):
    """A ranker trained on a subset of the features, in another order, is fed those columns by name."""
    fc, art, frame = ranked
    keep = [FEATURES[k] for k in (5, 0, 16, 3, 11)]
    cols = [FEATURES.index(f) for f in keep]
    booster = lgb.train({"objective": "lambdarank", "verbose": -1, "num_leaves": 7, "min_data_in_leaf": 3},
                        lgb.Dataset(frame.cand.X[:, cols], frame.y, feature_name=keep,
                                    group=np.bincount(frame.cand.m, minlength=frame.hb.b)[
                                        np.bincount(frame.cand.m, minlength=frame.hb.b) > 0]),
                        num_boost_round=10)
    sub = dataclasses.replace(art, ranker=booster.model_to_string())
    ref = booster.predict(frame.cand.X[:, cols], num_threads=1)
    assert np.max(np.abs(score_candidates(sub, frame.cand) - ref)) <= 1e-9
    assert np.max(np.abs(score_candidates(sub, frame.cand, compiled=False) - ref)) <= 1e-9


def _reference(art, inp: pd.DataFrame, as_of) -> pd.DataFrame:
    """The reference path: all members in one batch, scored by LightGBM itself."""
    hb = prepare_history(inp, art, as_of)
    cand = build_candidates(art, hb)
    return top_items(art, hb, cand, score_candidates(art, cand, compiled=False))


def test_one_member_equals_reference_path(ranked):
    fc, art, _ = ranked
    assert art.predictor is not None
    members = fc.member_ids[:40]
    inp = model_input(fc, members).reset_index(drop=True)
    ref = _reference(art, inp, fc.cutoff)
    model = RecsModel(art)
    n_checked = 0
    for m in members:
        one = model.predict(None, inp[inp["member_id"] == m].reset_index(drop=True), params={"as_of": fc.cutoff})
        exp = ref[ref["member_id"] == m].reset_index(drop=True)
        assert len(one) == len(exp) > 0
        for c in ("member_id", "rank", "item_id", "reason"):
            assert one[c].tolist() == exp[c].tolist(), (m, c)
        assert np.max(np.abs(one["score"].to_numpy() - exp["score"].to_numpy())) <= 1e-9
        assert list(one.dtypes) == list(exp.dtypes)
        n_checked += 1
    assert n_checked == len(members)
    # the batch path itself is unchanged by the compiled ranker
    batch = recommend(art, inp, as_of=fc.cutoff)
    pd.testing.assert_frame_equal(batch.drop(columns="score"), ref.drop(columns="score"))
    assert np.max(np.abs(batch["score"].to_numpy() - ref["score"].to_numpy())) <= 1e-9


def _random_history(seed: int) -> pd.DataFrame:
    """A summarised history of random orders (with refunded and cancelled lines) and events for 1-3 members."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 120))
    t0 = pd.Timestamp("2024-01-01")
    orders = pd.DataFrame({
        "order_id": [f"o{k}" for k in rng.integers(0, max(n // 3, 1), n)],
        "member_id": [f"m{k}" for k in rng.integers(0, int(rng.integers(1, 4)), n)],
        "ordered_at": t0 + pd.to_timedelta(rng.integers(0, 90 * 24, n), unit="h"),
        "item_id": [f"i{k}" for k in rng.integers(0, 70, n)],  # i60.. are unknown to the model
        "amount": np.where(rng.random(n) < 0.1, np.nan, rng.random(n) * 20),
        "status": rng.choice(["paid", "paid", "paid", "refunded", "cancelled"], n)})
    k = n // 2
    events = pd.DataFrame({
        "member_id": rng.choice(orders["member_id"].to_numpy(), k),
        "occurred_at": t0 + pd.to_timedelta(rng.integers(0, 90 * 24, k), unit="h"),
        "type": rng.choice(["view", "cart", "favorite"], k),
        "item_id": [f"i{j}" for j in rng.integers(0, 70, k)]})
    return summarise_history(orders, events if seed % 2 else None, t0 + pd.Timedelta(days=91))


def _variants(h: pd.DataFrame, seed: int) -> list[pd.DataFrame]:
    """The same history in the column types callers send: as summarised, nullable/int numbers, microsecond
    timestamps, object ids, and a frame with optional columns missing."""
    out = [h]
    v = h.copy()
    v["n_view"] = v["n_view"].astype("Float64")
    v["n_bought"] = v["n_bought"].astype("int64")
    v["last_bought_at"] = v["last_bought_at"].astype("datetime64[us]")
    v["member_id"] = v["member_id"].astype(object)
    out.append(v)
    out.append(h.drop(columns=["spend", "n_cart", "first_bought_at", "n_bought_hl56"]))
    return out


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 100_000))
def test_column_reads_equal_pandas_path(ranked, seed):
    """prepare_history with the cheap column reads equals the pandas conversions it replaces."""
    _, art, _ = ranked
    as_of = pd.Timestamp("2024-04-01")
    for h in _variants(_random_history(seed), seed):
        for sub in (h, h[h["member_id"] == h["member_id"].iloc[0]].reset_index(drop=True)):
            if len(sub) == 0:
                continue
            fast = prepare_history(sub, art, as_of)
            with pytest.MonkeyPatch.context() as mp:  # force every column through pandas
                mp.setattr(recs_mod, "numeric_column", lambda *a: None)
                mp.setattr(recs_mod, "datetime_column_us", lambda *a: None)
                mp.setattr(recs_mod, "single_value", lambda *a: (False, None))
                slow = prepare_history(sub, art, as_of)
            for f in dataclasses.fields(fast):
                a, b = getattr(fast, f.name), getattr(slow, f.name)
                assert a.dtype == b.dtype, f.name
                np.testing.assert_array_equal(a, b, err_msg=f.name)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.sampled_from([0.0, -0.0, 1.0])),
                min_size=0, max_size=40))
def test_one_group_rank_equals_lexsort(scores):
    s = np.asarray(scores, dtype=np.float64)
    g = np.zeros(len(s), np.int64)
    order, rank = group_rank(g, s)
    ref = np.lexsort((-s, g))
    assert np.array_equal(order, ref)
    assert np.array_equal(rank, np.arange(len(s)))


@given(st.lists(st.sampled_from(["a", "b", None]), min_size=0, max_size=8),
       st.sampled_from(["object", "string"]))
def test_single_value(values, dtype):
    arr = np.array(values, dtype=object) if dtype == "object" else pd.array(values, dtype="string")
    ok, v = frame_columns.single_value(arr)
    expect = len(values) > 0 and None not in values and len(set(values)) == 1
    assert ok == expect and (v == values[0] if ok else v is None)


def test_compiled_forest_parses_single_leaf_trees():
    X = np.zeros((50, 2), np.float32)
    booster = lgb.train({"objective": "regression", "verbose": -1, "min_data_in_leaf": 1},
                        lgb.Dataset(X, np.arange(50.0), feature_name=["a", "b"]), num_boost_round=3)
    forest = pack_lightgbm(booster.model_to_string())
    assert forest.n_trees == booster.num_trees() >= 1 and len(forest.feature) == 0
    predictor, note = compile_forest(booster.model_to_string(), ["a", "b"])
    assert predictor is not None, note
    np.testing.assert_array_equal(predictor.predict(X), booster.predict(X))


def test_one_member_solve_equals_the_chunked_path(ranked):
    """The one-member shortcut of the ALS fold-in gives bit-identical factors to the general chunked solve (the
    member twice: one chunk of the same width)."""
    fc, art, _ = ranked
    for m in fc.member_ids[:10]:
        hb = prepare_history(fc.history[fc.history["member_id"] == m], art, fc.cutoff)
        s = strength(hb.n_bought, hb.n_cart, hb.n_favorite, hb.n_view, art.p)
        c = bm25_confidence(s, hb.m, hb.i, hb.b, art.item_idf, art.p)
        f = art.item_factors.shape[1]
        one = _solve_batched(art, hb.m, hb.i, c, np.zeros((1, f)))
        two = _solve_batched(art, np.r_[hb.m, hb.m + 1], np.r_[hb.i, hb.i], np.r_[c, c], np.zeros((2, f)))
        np.testing.assert_array_equal(one[0], two[0])
        np.testing.assert_array_equal(one[0], two[1])
