"""The one-member loops (`recs_online.py`) give the batch code's answers bit for bit: the same candidates, sources,
kNN seeds and feature matrix for random one-member histories (empty, NaN/inf/zero values, tied scores, segments),
the same top-N rows and frame for random scores and rules (ties, NaN, ±inf, exclusions, allow-lists), and the same
reason texts as the vectorised `reasons`."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import training.member_pyfunc.recs as recs_mod
from training.member_pyfunc import recs_online
from training.member_pyfunc.recs import (
    HistoryBatch, RecsModel, build_candidates, recommend, top_items)
from training.member_pyfunc.recs_rules import reasons
from training.recs.candidates import CandidateConfig
from training.recs.train import model_input

sys.path.insert(0, str(Path(__file__).parent))
from fixtures_recs import SMALL_CUTOFF as CUTOFF, fit_small, same_bits as _same  # noqa: E402

SMALL = CandidateConfig(factors=8, iterations=8, knn_k=10, n_hist=12, n_als=20, n_knn=15, n_pop=10)


@pytest.fixture(scope="module")
def fitted():
    return fit_small(SMALL)


def _one_member(art, seed: int) -> HistoryBatch:
    """One member's random history: NaN/inf/zero values, tied counts, any length up to the whole catalogue."""
    rng = np.random.default_rng(seed)
    n = art.n_items
    i = np.sort(rng.choice(n, size=int(rng.integers(0, n + 1)) if seed % 5 else 0, replace=False)).astype(np.int64)
    h = len(i)

    def col(nan: float = 0.2, inf: float = 0.03, scale: float | None = None) -> np.ndarray:
        x = rng.random(h) * (scale or rng.choice([1e-5, 1.0, 50.0, 800.0]))
        x[rng.random(h) < 0.1] = 0.0
        x[rng.random(h) < nan] = np.nan
        x[rng.random(h) < inf] = np.inf
        return x

    nb = np.floor(rng.random(h) * rng.choice([1.2, 3.0, 6.0]))  # many ties in the repurchase score
    seg = np.array([int(rng.integers(-1, len(art.segments)))], np.int32) if len(art.segments) else \
        np.full(1, -1, np.int32)
    return HistoryBatch(
        member_ids=np.array(["m0"]), segment=seg, m=np.zeros(h, np.int64), i=i, n_bought=nb,
        days_last=col(0.1), days_first=col(0.2, scale=800.0), days_seen=col(0.1, inf=0.0 if seed % 2 else 0.03),
        n_view=col(0, inf=0.0), n_cart=col(0, inf=0.0), n_favorite=col(0, inf=0.0), spend=col(0.3, 0.0),
        hl14=col(), hl56=col(), view_hl1=col(), cart_hl1=col())


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 100_000))
def test_one_member_candidates_equal_batch_code(fitted, seed):
    art = fitted.art
    assert art.online_kernel
    hb = _one_member(art, seed)
    fast = recs_mod._candidates_one(art, hb)
    ref = build_candidates(art, hb, online=False)
    assert fast is not None
    for f in dataclasses.fields(ref):
        assert _same(getattr(fast, f.name), getattr(ref, f.name)), f.name


def test_one_member_candidates_decline_nan_scores(fitted):
    """A history whose repurchase score is NaN (inf − inf) is left to the batch code (same answer)."""
    art = fitted.art
    hb = _one_member(art, 1)
    hb.n_bought[:2] = np.inf
    hb.n_view[:2] = -np.inf
    with np.errstate(invalid="ignore"):
        assert recs_mod._candidates_one(art, hb) is None
        fast, ref = build_candidates(art, hb), build_candidates(art, hb, online=False)
    for f in dataclasses.fields(ref):
        assert _same(getattr(fast, f.name), getattr(ref, f.name)), f.name


_RULES = [{}, {"exclude_recent_non_consumable_days": 0}, {"exclude_recent_non_consumable_days": 400},
          {"exclude_categories": ["美妆"], "exclude_items": ["i3", "i7"]}, {"allow_items": ["i1", "i2", "i40"]},
          {"infer_consumable_repeat_rate": None}]


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 100_000), rules=st.sampled_from(_RULES), top_n=st.sampled_from([1, 3, 10, 500]),
       apply_rules=st.booleans())
def test_one_member_top_items_equal_batch_code(fitted, seed, rules, top_n, apply_rules):
    """Random scores with ties and ±inf (NaN: declined, same frame), random rules: the same frame."""
    art = dataclasses.replace(fitted.art, params={**fitted.art.params, "rules": rules})
    rng = np.random.default_rng(seed)
    hb = _one_member(art, seed)
    cand = build_candidates(art, hb, online=False)
    score = rng.choice([0.0, -0.0, 1.0, 2.5, -np.inf, np.inf], len(cand.m)) if seed % 3 == 0 \
        else rng.normal(size=len(cand.m))
    if seed % 7 == 0 and len(score):
        score[rng.integers(0, len(score))] = np.nan
    cand = dataclasses.replace(cand, seed=np.where(rng.random(len(cand.m)) < 0.5, cand.seed, -1))
    fast = top_items(art, hb, cand, score, top_n=top_n, apply_rules=apply_rules)
    ref = top_items(art, hb, cand, score, top_n=top_n, apply_rules=apply_rules, online=False)
    pd.testing.assert_frame_equal(fast, ref, check_exact=True)
    assert _same(fast["score"].to_numpy(), ref["score"].to_numpy())


def test_static_rules_mask_equals_allowed_mask(fitted):
    rules = {"exclude_categories": ["母婴"], "exclude_items": ["i3"], "allow_items": ["i1", "i3", "i25", "i50"]}
    art = dataclasses.replace(fitted.art, params={**fitted.art.params, "rules": rules})
    ok = art.static_allowed
    ids = art.item_ids.tolist()
    cats = art.categories[art.item_category].tolist()
    expect = [(x in rules["allow_items"]) and x != "i3" and c != "母婴" for x, c in zip(ids, cats)]
    assert ok.tolist() == expect


_GAPS = st.one_of(st.floats(min_value=-5, max_value=1e7), st.sampled_from([np.nan, np.inf, -np.inf]),
                  st.sampled_from([1.4999999, 1.5, 12.5, 13.0, 59.99, 60.0, 3.5, 10.5, 45.5, 91.2, 76.0]))


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from([0.0, 1.0, 2.0, 5.0, np.nan]), _GAPS,
                               st.sampled_from([0.0, 1.0, np.nan]), st.sampled_from(["", "i7", "nan", "None"]),
                               st.sampled_from(["", "美妆", "None", "nan"]), st.integers(0, 3)), max_size=12))
def test_reasons_for_a_few_rows_equal_the_vectorised_texts(rows):
    nb = np.array([r[0] for r in rows], np.float32)
    gap = np.array([r[1] for r in rows], float)
    eng = np.array([r[2] for r in rows], np.float32)
    seed, cat = [r[3] for r in rows], [r[4] for r in rows]
    src = np.array([r[5] for r in rows], np.int8)
    ref = reasons(n_bought=nb, mean_gap=gap, n_engaged=eng, seed_item=np.array(seed, dtype=object),
                  category=np.array(cat, dtype=object), source=src)
    assert recs_online.reasons_few(n_bought=nb, mean_gap=gap, n_engaged=eng, seed_item=seed, category=cat,
                                   source=src) == ref.tolist()


def test_model_answers_equal_batch_code_for_one_member(fitted, monkeypatch):
    """End to end through the pyfunc: each member alone (and a cold-start member, an unknown-item-only member and
    a member with a segment) equals the same member scored by the batch code."""
    art = fitted.art
    inp = model_input(fitted, fitted.member_ids[:30]).reset_index(drop=True)
    singles = [g.reset_index(drop=True) for _, g in inp.groupby("member_id", sort=False)]
    singles.append(pd.DataFrame({"member_id": ["m-cold"], "item_id": [None]}))
    singles.append(singles[0].assign(member_id="m-unknown", item_id="zz"))
    if len(art.segments):
        singles.append(singles[1].assign(segment=str(art.segments[0])))
    model = RecsModel(art)
    ran = []
    real = recs_mod._candidates_one
    monkeypatch.setattr(recs_mod, "_candidates_one", lambda *a: ran.append(1) or real(*a))
    for one in singles:
        fast = model.predict(None, one, params={"as_of": CUTOFF})
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(recs_mod, "build_candidates", lambda a, h: build_candidates(a, h, online=False))
            mp.setattr(recs_mod, "top_items", lambda *a, **k: top_items(*a, **k, online=False))
            ref = recommend(art, one, as_of=CUTOFF)
        pd.testing.assert_frame_equal(fast, ref, check_exact=True)
        assert len(fast) > 0
    assert len(ran) >= len(singles) - 1


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 100_000), n=st.integers(0, 3000), span=st.sampled_from([1, 7, 1000, 2**40, 2**61]),
       negative=st.booleans())
def test_stable_key_order_equals_numpy(seed, n, span, negative):
    """The packed integer sort (and its merge-sort fallback for wide or negative keys) is numpy's stable order."""
    from training.member_pyfunc.recs_kernels import _compiled, knn_sums

    rng = np.random.default_rng(seed)
    kk = rng.integers(0, span, n).astype(np.int64) - (span // 2 if negative else 0)
    kw = rng.random(n)
    ks = rng.integers(0, 50, n).astype(np.int64)
    _compiled()  # the loops compile
    uk, score, seed_out = knn_sums(kk, kw, ks)
    order = np.argsort(kk, kind="stable")
    ref_uk, first = np.unique(kk, return_index=True)
    assert np.array_equal(uk, ref_uk)
    # sums in input order per key
    ref = np.zeros(len(ref_uk))
    pos = np.searchsorted(ref_uk, kk[order])
    for p, w in zip(pos.tolist(), kw[order].tolist()):
        ref[p] += w
    assert np.array_equal(score, ref)


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.text(st.sampled_from(list("0123456789ab -é美妆\x00")), max_size=6), max_size=12))
def test_string_array_equals_pandas(values):
    fast, ref = recs_online.string_array(values), pd.array(values, dtype="string")
    assert fast.dtype == ref.dtype and type(fast) is type(ref)
    pd.testing.assert_extension_array_equal(fast, ref)
    pd.testing.assert_frame_equal(pd.DataFrame({"a": fast}), pd.DataFrame({"a": ref}), check_exact=True)


@settings(max_examples=80, deadline=None)
@given(values=st.lists(st.one_of(st.none(), st.sampled_from(["m1", "m1", "m1", "m2", "", "美妆1", "m1\x00"])),
                       max_size=9),
       large=st.booleans(), cut=st.integers(0, 3))
def test_arrow_single_member_equals_single_value(values, large, cut):
    """Same/different/null/empty ids, string and large_string, two chunks, a sliced chunk."""
    import pyarrow as pa

    from training.member_pyfunc.frame_columns import single_value

    typ = pa.large_string() if large else pa.string()
    chunked = pa.chunked_array([pa.array(values[:len(values) // 2], typ), pa.array(values[len(values) // 2:], typ)],
                               typ)
    arr = pd.Series(pd.arrays.ArrowStringArray(chunked))[cut:].array
    assert recs_online.arrow_single_value(arr) == single_value(arr)
    assert recs_online.arrow_single_value(np.array(values, dtype=object)) is None


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), leaves=st.sampled_from([2, 7, 63]), n_rows=st.sampled_from([1, 63, 64, 65, 700]),
       nan_share=st.floats(0, 0.5))
def test_bit_mask_forest_loop_equals_row_walk_and_lightgbm(seed, leaves, n_rows, nan_share):
    """The 64-rows-at-a-time loop gives the row walk's and LightGBM's scores bit for bit (NaN, ±inf, zeros, partial
    blocks, several row blocks)."""
    import lightgbm as lgb

    from training.member_pyfunc.tree_predictor import CompiledForest, pack_lightgbm

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(500, 4)).astype(np.float32)
    X[rng.random(X.shape) < nan_share] = np.nan
    booster = lgb.train({"objective": "lambdarank", "num_leaves": leaves, "min_data_in_leaf": 2, "verbose": -1,
                         "num_threads": 1, "seed": seed}, lgb.Dataset(X, rng.integers(0, 3, 500), group=[50] * 10),
                        num_boost_round=int(rng.integers(1, 20)))
    forest = pack_lightgbm(booster.model_to_string())
    bits, walk = CompiledForest(forest), CompiledForest(forest, kind="walk")
    assert bits.kind == "bits"
    T = (rng.normal(size=(n_rows, 4)) * 10.0 ** rng.integers(-3, 4, size=4)).astype(np.float32)
    T[rng.random(T.shape) < nan_share] = np.nan
    T[rng.random(T.shape) < 0.05] = np.inf
    T[rng.random(T.shape) < 0.05] = -np.inf
    T[rng.random(T.shape) < 0.1] = 0.0
    a, b = bits.predict(T), walk.predict(T)
    assert _same(a, b)
    assert np.array_equal(a, booster.predict(T, num_threads=1))


def test_compiled_ranker_does_not_load_lightgbm(fitted):
    """With the compiled ranker, scoring never builds the LightGBM booster (its import costs seconds on the first
    request); without it, LightGBM scores."""
    import lightgbm as lgb

    from training.member_pyfunc.recs import score_candidates

    fc = fitted
    rng = np.random.default_rng(0)
    hb = _one_member(fc.art, 3)
    cand = build_candidates(fc.art, hb)
    y = rng.integers(0, 3, len(cand.m))
    booster = lgb.train({"objective": "regression", "num_leaves": 7, "verbose": -1, "min_data_in_leaf": 2},
                        lgb.Dataset(cand.X, y, feature_name=list(recs_mod.FEATURES)), num_boost_round=5)
    art = dataclasses.replace(fc.art, ranker=booster.model_to_string())
    assert art.predictor is not None
    fast = score_candidates(art, cand)
    assert "booster" not in art.__dict__
    assert np.array_equal(fast, score_candidates(art, cand, compiled=False))
    assert "booster" in art.__dict__


def test_output_frames_do_not_share_mutable_parts():
    from training.member_pyfunc.recs import output_frame

    def one() -> pd.DataFrame:
        return output_frame({"member_id": recs_online.string_array(["m"] * 2), "rank": np.arange(1, 3),
                             "item_id": recs_online.string_array(["a", "b"]), "score": np.zeros(2),
                             "reason": recs_online.string_array(["x", "y"])})

    a, b = one(), one()
    a.columns.name = "changed"
    a["extra"] = 1
    assert b.columns.name is None and list(b.columns) == ["member_id", "rank", "item_id", "score", "reason"]
