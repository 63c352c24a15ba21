"""The one-member latency shortcuts give the reference path's answers: the compiled feature loops write the numpy
feature matrix bit for bit, and one member's recommendations (items, order, scores, reasons) are unchanged with the
shortcuts on (the pruned ALS top-k included: its own tests are in test_recs_als_topk.py), for an empty history, a
cold-start member, a history longer than a year and items the model does not know."""
from __future__ import annotations

import dataclasses
import functools
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import training.member_pyfunc.recs as recs_mod
from training.member_pyfunc import als_topk
from training.member_pyfunc.recs import (
    FEATURES, OUTPUT_COLUMNS, HistoryBatch, RecsModel, _features, _features_numpy, _knn_sums, build_candidates,
    output_frame, prepare_history, recommend)
from training.member_pyfunc.frame_columns import string_array
from training.member_pyfunc.item_lookup import item_table
from training.member_pyfunc.recs_kernels import KERNEL_FEATURES
from training.recs.candidates import CandidateConfig
from training.recs.train import model_input

sys.path.insert(0, str(Path(__file__).parent))
from fixtures_recs import SMALL_CUTOFF as CUTOFF, fit_small, same_bits as _same  # noqa: E402

SMALL = CandidateConfig(factors=8, iterations=8, knn_k=10, n_hist=50, n_als=20, n_knn=20, n_pop=10)


@pytest.fixture(scope="module")
def fitted():
    """A small fitted model (no ranker needed: the features and candidates are what is compared)."""
    return fit_small(SMALL)


# ---------------------------------------------------------------------------------------------------------------
# compiled feature loops

def test_kernel_writes_the_feature_list():
    assert KERNEL_FEATURES == FEATURES


def _random_batch(art, seed: int) -> tuple[HistoryBatch, tuple]:
    """A random history batch with NaN/inf/zero values, members without rows, and random candidates."""
    rng = np.random.default_rng(seed)
    n = art.n_items
    b = int(rng.integers(1, 5))
    keys = np.unique(rng.integers(0, b * n, int(rng.integers(0, rng.choice([6, 3 * n])))))
    m, i = keys // n, keys % n
    h = len(keys)

    def col(nan: float = 0.2, inf: float = 0.03, scale: float | None = None) -> np.ndarray:
        x = rng.random(h) * (scale or rng.choice([1e-5, 1.0, 50.0, 800.0]))  # tiny values reach the floors
        x[rng.random(h) < 0.1] = 0.0
        x[rng.random(h) < nan] = np.nan
        x[rng.random(h) < inf] = np.inf
        return x

    nb = np.floor(rng.random(h) * rng.choice([1.2, 6.0])) if seed % 3 else rng.random(h) * 1.5  # or fractional
    hb = HistoryBatch(
        member_ids=np.array([f"m{k}" for k in range(b)]), segment=np.full(b, -1, np.int32), m=m, i=i,
        n_bought=nb, days_last=col(0.1), days_first=col(0.2, scale=800.0), days_seen=col(0.1),
        n_view=col(0), n_cart=col(0), n_favorite=col(0), spend=col(0.3, 0.0), hl14=col(), hl56=col(),
        view_hl1=col(), cart_hl1=col())
    ck = np.unique(np.r_[keys[rng.random(h) < 0.7], rng.integers(0, b * n, int(rng.integers(0, 2 * n)))])
    cm, ci = ck // n, ck % n
    u = rng.normal(size=(b, art.item_factors.shape[1])).astype(np.float32)
    rep = rng.random(h) * 5
    knn_key = np.unique(rng.choice(ck, size=min(len(ck), int(rng.integers(0, 30))), replace=False)) if len(ck) \
        else np.zeros(0, np.int64)
    knn_score = rng.random(len(knn_key)) * (rng.random(len(knn_key)) < 0.8)
    return hb, (u, rep, ck, cm, ci, knn_key, knn_score)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 100_000), odd_items=st.booleans())
def test_compiled_features_equal_numpy(fitted, seed, odd_items):
    art = fitted.art
    if odd_items:  # unknown categories, NaN prices and cycles, zero popularity
        rng = np.random.default_rng(seed)
        n = art.n_items
        art = dataclasses.replace(
            art, item_category=np.where(rng.random(n) < 0.3, -1, art.item_category).astype(art.item_category.dtype),
            item_price=np.where(rng.random(n) < 0.3, np.nan, art.item_price).astype(np.float32),
            item_cycle=np.where(rng.random(n) < 0.5, np.nan, rng.random(n) * 30).astype(np.float32),
            item_pop_recent=np.where(rng.random(n) < 0.3, 0, art.item_pop_recent).astype(np.float32))
    assert art.feature_kernel
    hb, args = _random_batch(art, seed)
    fast = _features(art, hb, *args)
    ref = _features_numpy(art, hb, *args)
    assert _same(fast, ref), [FEATURES[k] for k in np.unique(np.nonzero(
        ~((fast == ref) | (np.isnan(fast) & np.isnan(ref))))[1])]


# ---------------------------------------------------------------------------------------------------------------
# whole answers

def _numpy_path(mp: pytest.MonkeyPatch) -> None:
    """Route the features and the kNN sums through numpy, and one member through the batch code (the reference)."""
    mp.setattr(recs_mod, "_features", functools.partial(_features, compiled=False))
    mp.setattr(recs_mod, "_knn_sums", functools.partial(_knn_sums, compiled=False))
    mp.setattr(recs_mod, "build_candidates", functools.partial(recs_mod.build_candidates, online=False))
    mp.setattr(recs_mod, "top_items", functools.partial(recs_mod.top_items, online=False))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 100_000), n=st.integers(0, 400), n_keys=st.sampled_from([1, 5, 50, 10_000]))
def test_compiled_knn_sums_equal_numpy(fitted, seed, n, n_keys):
    """Repeated keys, tied and NaN weights, zeros of both signs: the same keys, sums and seeds."""
    rng = np.random.default_rng(seed)
    kk = rng.integers(0, n_keys, n).astype(np.int64)
    kw = rng.choice([0.0, -0.0, 0.5, 1.0, np.nan, 2.0], n) if seed % 2 else rng.random(n)
    ks = rng.integers(0, 60, n).astype(np.int64)
    fast = _knn_sums(fitted.art, kk, kw, ks)
    ref = _knn_sums(fitted.art, kk, kw, ks, compiled=False)
    if n == 0:  # (np.bincount of nothing is int64 even with weights; nothing is looked up in it)
        assert all(len(a) == len(b) == 0 for a, b in zip(fast, ref, strict=True))
        return
    for a, b in zip(fast, ref, strict=True):
        assert _same(a, b)


def _edge_inputs(fc) -> dict[str, pd.DataFrame]:
    """One-member inputs: ordinary, long (first bought > 1 year ago), with unknown items, cold start, empty."""
    h = fc.history
    members = fc.member_ids[:6]
    out = {f"member {m}": h[h["member_id"] == m].reset_index(drop=True) for m in members}
    long = out[f"member {members[0]}"].copy()
    long["first_bought_at"] = pd.Timestamp(CUTOFF) - pd.Timedelta(days=500)
    out["longer than a year"] = long
    unknown = out[f"member {members[1]}"].copy()
    extra = unknown.iloc[:3].copy()
    extra["item_id"] = ["zz-1", "zz-2", "zz-3"]
    out["unknown items"] = pd.concat([unknown, extra], ignore_index=True)
    only_unknown = extra.copy()
    only_unknown["member_id"] = "m-new"
    out["only unknown items"] = only_unknown.reset_index(drop=True)
    out["cold start"] = pd.DataFrame({"member_id": ["m-cold"], "item_id": [None]})
    out["empty"] = out[f"member {members[2]}"].iloc[:0]
    out["batch"] = model_input(fc, fc.member_ids[:25]).reset_index(drop=True)
    return out


def test_recommendations_unchanged_by_the_shortcuts(fitted, monkeypatch):
    """Every input through the model with the shortcuts (compiled loops, pruned ALS top-k with a small first block
    so it prunes this 60-item catalogue) equals the reference (numpy features, every item scored by numpy)."""
    art = fitted.art
    assert art.feature_kernel
    pruned_calls = []
    real_top_k = recs_mod.top_k

    def spy(*a):
        pruned_calls.append(1)
        return real_top_k(*a)

    for name, inp in _edge_inputs(fitted).items():
        monkeypatch.setattr(als_topk, "FIRST_BLOCK", 24)
        monkeypatch.setattr(recs_mod, "top_k", spy)
        fast = RecsModel(art).predict(None, inp, params={"as_of": CUTOFF})
        monkeypatch.setattr(recs_mod, "top_k", functools.partial(real_top_k, compiled=False))
        monkeypatch.setattr(recs_mod, "top_k_rows", functools.partial(recs_mod.top_k_rows, compiled=False))
        _numpy_path(monkeypatch)
        ref = recommend(art, inp, as_of=CUTOFF)
        monkeypatch.undo()
        pd.testing.assert_frame_equal(fast, ref, check_exact=True, obj=name)
        if name != "empty":
            assert len(fast) > 0, name
    assert sum(pruned_calls) >= 5  # the pruned path really ran (one-member inputs with history)


def test_candidates_unchanged_in_batch(fitted):
    """The batch path: the same candidates and feature matrix with the compiled loops as with numpy."""
    art = fitted.art
    hb = prepare_history(model_input(fitted, fitted.member_ids).reset_index(drop=True), art, CUTOFF)
    fast = build_candidates(art, hb)
    with pytest.MonkeyPatch.context() as mp:
        _numpy_path(mp)
        ref = build_candidates(art, hb)
    for f in dataclasses.fields(fast):
        assert _same(getattr(fast, f.name), getattr(ref, f.name)), f.name


@pytest.mark.parametrize("n", [0, 1, 10])
def test_output_frame_equals_the_dict_constructor(n):
    rng = np.random.default_rng(n)
    cols = {"member_id": string_array(np.array(["m1"] * n)), "rank": np.arange(1, n + 1, dtype=np.int64),
            "item_id": string_array(np.array([f"i{k}" for k in range(n)], dtype=object)),
            "score": rng.random(n), "reason": string_array(np.array(["you bought this before"] * n, dtype=object))}
    fast = output_frame(dict(cols))
    ref = pd.DataFrame(cols)
    pd.testing.assert_frame_equal(fast, ref, check_exact=True)
    assert list(fast.columns) == list(OUTPUT_COLUMNS) and fast.index.equals(pd.RangeIndex(n))
    if n:  # a frame of its own: writable like the dict constructor's
        fast.loc[0, "score"] = -1.0
        assert fast["score"].iloc[0] == -1.0


# ---------------------------------------------------------------------------------------------------------------
# compiled item id lookup

_ID_CHARS = st.sampled_from(list("0123456789abAB-_ é美妆\x00"))


@settings(max_examples=60, deadline=None)
@given(model=st.lists(st.text(_ID_CHARS, max_size=8), min_size=0, max_size=60),
       extra=st.lists(st.one_of(st.none(), st.text(_ID_CHARS, max_size=8)), max_size=30),
       seed=st.integers(0, 1000), large=st.booleans(), cut=st.integers(0, 5))
def test_item_table_equals_the_dict(model, extra, seed, large, cut):
    """Known, unknown, empty and null ids, repeated model ids (the later position wins, as in the dict), non-ASCII
    bytes, string and large_string Arrow columns, several chunks and sliced chunks."""
    import pyarrow as pa

    model_ids = np.array(model, dtype=str) if model else np.zeros(0, dtype=str)
    table = item_table(model_ids)
    assert table is not None
    rng = np.random.default_rng(seed)
    values = list(extra) + [model[k] for k in rng.integers(0, len(model), 20)] if model else list(extra)
    rng.shuffle(values)
    typ = pa.large_string() if large else pa.string()
    chunks = [pa.array(values[:len(values) // 2], typ), pa.array(values[len(values) // 2:], typ)]
    chunked = pa.chunked_array(chunks, typ)
    series = pd.Series(pd.arrays.ArrowStringArray(chunked))[cut:]  # a slice: chunks with an offset
    got = item_table(model_ids).positions(series.array)
    where = {x: k for k, x in enumerate(model_ids.tolist())}
    expect = np.array([where.get(x, -1) if isinstance(x, str) else -1 for x in series.tolist()], np.int64)
    assert got is not None and np.array_equal(got, expect)
    # not Arrow strings: declined (the caller keeps its dict)
    assert table.positions(np.array(values, dtype=object)) is None


def test_prepare_history_item_positions_equal_on_arrow_and_object_ids(fitted):
    art = fitted.art
    h = fitted.history[fitted.history["member_id"] == fitted.member_ids[0]].reset_index(drop=True)
    h = pd.concat([h, h.iloc[:2].assign(item_id=["zz-unknown", None])], ignore_index=True)
    arrow = h.assign(item_id=h["item_id"].astype("string[pyarrow]"))
    obj = h.assign(item_id=h["item_id"].astype(object))
    assert art.item_table.positions(arrow["item_id"].array) is not None
    a, b = prepare_history(arrow, art, CUTOFF), prepare_history(obj, art, CUTOFF)
    for f in dataclasses.fields(a):
        assert _same(getattr(a, f.name), getattr(b, f.name)), f.name


# ---------------------------------------------------------------------------------------------------------------
# one-member ALS fold-in

@pytest.mark.parametrize("length", [1, 7, 60])
def test_compiled_factor_rows_give_the_same_member_factors(fitted, length):
    """The fused gather/scale pass feeds BLAS the same numbers in the same layout: bit-identical factors (and the
    same as the chunked batch solve), for short and catalogue-long histories with heavy and light weights."""
    art = fitted.art
    rng = np.random.default_rng(length)
    f = art.item_factors.shape[1]
    for _ in range(5):
        i = np.sort(rng.choice(art.n_items, size=min(length, art.n_items), replace=False)).astype(np.int64)
        c = rng.random(len(i)) * rng.choice([0.01, 1.0, 50.0])
        m = np.zeros(len(i), np.int64)
        fast = recs_mod._solve_batched(art, m, i, c, np.zeros((1, f)))
        ref = recs_mod._solve_batched(art, m, i, c, np.zeros((1, f)), compiled=False)
        chunked = recs_mod._solve_batched(art, np.r_[m, m + 1], np.r_[i, i], np.r_[c, c], np.zeros((2, f)))
        assert _same(fast, ref)
        assert _same(fast[0], chunked[0])
