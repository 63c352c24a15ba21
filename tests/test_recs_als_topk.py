"""The ALS top-k (`als_topk.py`) is its definition from every path: the k items with the highest float64
fixed-order score d, ties by the lower item index, NaN last. One member (norm-pruned search), a batch chunk
(compiled per-row pass), and both numpy fallbacks all return the reference's items in the reference's order, on
factors with exact ties (duplicated rows), near-ties (rows one bit apart), NaN items and zero/NaN/inf/tiny
members; any float32 scores within the rounding bound lead to the same answer (the superset rule never drops a true
top-k item); the pruned search really leaves the tail of the catalogue unread."""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.member_pyfunc import als_topk
from training.member_pyfunc.als_topk import exact_scores, norm_order, top_k, top_k_rows


def reference(y: np.ndarray, u: np.ndarray, k: int) -> np.ndarray:
    """The definition, plainly: float64 products summed over factors 0..f−1, then (−d, index), NaN last."""
    d = np.zeros(len(y))
    for t in range(y.shape[1]):
        d = d + np.float64(u[t]) * y[:, t].astype(np.float64)
    key = np.where(np.isnan(d), np.inf, -d)
    return np.lexsort((np.arange(len(y)), key))[:k]


def _factors(rng: np.random.Generator, n: int, f: int, ties: int = 0, near: int = 0, nan: int = 0) -> np.ndarray:
    """ALS-like uneven norms (a long tail of small ones); `ties` rows duplicated, `near` rows copies one bit apart
    in one factor, `nan` rows NaN."""
    y = (rng.normal(size=(n, f)) * rng.lognormal(-2.5, 1.0, size=(n, 1))).astype(np.float32)
    if ties:
        y[rng.integers(0, n, ties)] = y[rng.integers(0, n, ties)]
    if near:
        dst, src, col = rng.integers(0, n, near), rng.integers(0, n, near), rng.integers(0, f, near)
        y[dst] = y[src]
        y[dst, col] = np.nextafter(y[dst, col], np.where(rng.random(near) < 0.5, -np.inf, np.inf).astype(np.float32))
    if nan:
        y[rng.integers(0, n, nan)] = np.nan
    return y


def _member(rng: np.random.Generator, f: int, kind: str) -> np.ndarray:
    u = (rng.normal(size=f) * rng.lognormal(0, 1)).astype(np.float32)
    if kind == "zero":
        u[:] = 0
    elif kind == "nan":
        u[rng.integers(0, f)] = np.nan
    elif kind == "inf":
        u[rng.integers(0, f)] = np.inf
    elif kind == "tiny":
        u = (u * np.float32(1e-40)).astype(np.float32)  # subnormal: products still exact in float64
    return u


def _all_paths(order, y, U, k):
    """{path: (members, k) answers} for every way the model finds the top k."""
    return {"one member": np.stack([top_k(order, u, k) for u in U]),
            "one member numpy": np.stack([top_k(order, u, k, compiled=False) for u in U]),
            "batch": top_k_rows(order, y, U, k), "batch numpy": top_k_rows(order, y, U, k, compiled=False)}


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 100_000), f=st.sampled_from([8, 64]), k=st.sampled_from([1, 10, 50]),
       ties=st.sampled_from([0, 300]), near=st.sampled_from([0, 300]), nan=st.sampled_from([0, 0, 3]),
       kind=st.sampled_from(["normal", "zero", "nan", "inf", "tiny"]))
def test_every_path_returns_the_reference(seed, f, k, ties, near, nan, kind):
    rng = np.random.default_rng(seed)
    y = _factors(rng, 9000, f, ties, near, nan)  # above FIRST_BLOCK: the one-member search prunes
    order = norm_order(y)
    U = np.stack([_member(rng, f, kind), _member(rng, f, "normal"), _member(rng, f, "normal")])
    ref = np.stack([reference(y, u, k) for u in U])
    for path, got in _all_paths(order, y, U, k).items():
        assert got.dtype == np.int64 and np.array_equal(got, ref), path
    if kind == "nan":  # every score NaN: all tie, the lowest indices
        assert np.array_equal(ref[0], np.arange(k))
    elif kind == "zero":  # every score 0 except the NaN items (ranked last): the lowest finite indices
        assert np.array_equal(ref[0], np.flatnonzero(~np.isnan(y).any(axis=1))[:k])


def test_exact_ties_and_near_ties_at_the_kth_place():
    """Ties and one-bit differences exactly at the k-th place are decided by d and then the item index, the same
    way by every path."""
    rng = np.random.default_rng(3)
    y = _factors(rng, 6000, 16)
    u = rng.normal(size=16).astype(np.float32)
    kth = reference(y, u, 10)[-1]
    copies = rng.choice(np.setdiff1d(np.arange(6000), reference(y, u, 10)), 20, replace=False)
    y[copies] = y[kth]  # 20 exact ties of the 10th item, above and below its index
    y[copies[:5], 0] = np.nextafter(y[copies[:5], 0], np.float32(np.inf))  # and a few one bit away
    order = norm_order(y)
    ref = reference(y, u, 10)
    for path, got in _all_paths(order, y, u[None], 10).items():
        assert np.array_equal(got[0], ref), path
    same = np.tile(y[:1], (5000, 1))  # all items equal: the first k
    assert np.array_equal(top_k(norm_order(same), u, 7), np.arange(7))
    assert np.array_equal(top_k_rows(norm_order(same), same, u[None], 7)[0], np.arange(7))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 100_000), f=st.sampled_from([4, 16, 64]), k=st.sampled_from([1, 5, 40]),
       ties=st.sampled_from([0, 100]), extreme=st.booleans())
def test_superset_rule_never_drops_a_true_top_k_item(seed, f, k, ties, extreme):
    """Whatever float32 scores a BLAS kernel returns (any value within γ_f·‖u‖·‖y‖ of the exact dot product), the
    compiled pass and numpy find the reference's top k: the bound keeps every item that could be in it."""
    rng = np.random.default_rng(seed)
    y = _factors(rng, 2000, f, ties)
    U = np.stack([_member(rng, f, "normal") for _ in range(4)])
    order = norm_order(y)
    exact = (U.astype(np.float64) @ y.T.astype(np.float64))
    unit = 2.0 ** -24
    bound = f * unit / (1 - f * unit) * np.linalg.norm(U.astype(np.float64), axis=1)[:, None] * order.item_norms[None]
    step = rng.choice([-1.0, 1.0], size=exact.shape) if extreme else rng.uniform(-1, 1, size=exact.shape)
    sc = (exact + step * bound * (1 - 2 * unit)).astype(np.float32)  # within the bound after rounding to float32
    ref = np.stack([reference(y, u, k) for u in U])
    out = np.empty((len(U), k), np.int64)
    items = np.arange(len(y), dtype=np.int64)
    als_topk._compiled()[2](sc, order.item_norms, order.gamma, order.eta, U, items, y, out)
    assert np.array_equal(out, ref)
    assert np.array_equal(als_topk._select_numpy(sc, order.item_norms, order.gamma, order.eta, U, k, y, items), ref)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 100_000), f=st.sampled_from([1, 7, 64]), special=st.booleans())
def test_exact_scores_compiled_equal_numpy_bits(seed, f, special):
    rng = np.random.default_rng(seed)
    y = (rng.normal(size=(300, f)) * 10.0 ** rng.uniform(-30, 30, size=(300, 1))).astype(np.float32)
    u = (rng.normal(size=f) * 10.0 ** rng.uniform(-8, 8)).astype(np.float32)
    if special:
        y[::7] = -0.0
        y[1::11, 0] = np.float32(1e-42)  # subnormal
        y[2::13, -1] = np.nan
    rows = rng.integers(0, 300, 500)
    fast, ref = exact_scores(y, rows, u), exact_scores(y, rows, u, compiled=False)
    assert fast.dtype == ref.dtype == np.float64 and fast.tobytes() == ref.tobytes()
    d = np.zeros(len(rows))
    for t in range(f):
        d = d + np.float64(u[t]) * y[rows, t].astype(np.float64)
    assert d.tobytes() == fast.tobytes()


def test_one_member_search_leaves_the_tail_unread():
    """With a long tail of small norms the search stops after the first block: rows past it are never read
    (poisoned here with values that would win if they were), and the answer is still the reference's."""
    rng = np.random.default_rng(5)
    n, f = 3 * als_topk.FIRST_BLOCK, 16
    y = rng.normal(size=(n, f)).astype(np.float32)
    y[als_topk.FIRST_BLOCK:] *= np.float32(1e-6)
    order = norm_order(y)
    poisoned = order.factors.copy()
    poisoned[als_topk.FIRST_BLOCK:] = 1e3
    for _ in range(10):
        u = rng.normal(size=f).astype(np.float32)
        got = top_k(dataclasses.replace(order, factors=poisoned), u, 50)
        assert np.array_equal(got, reference(y, u, 50))


def test_small_catalogue_and_k_edges():
    rng = np.random.default_rng(2)
    y = _factors(rng, 30, 8)
    order = norm_order(y)
    u = rng.normal(size=8).astype(np.float32)
    for k in (0, 1, 29, 30, 45):
        ref = reference(y, u, min(k, 30))
        for path, got in _all_paths(order, y, u[None], k).items():
            assert got.shape == (1, len(ref)) and np.array_equal(got[0], ref), (path, k)


def _cj_cache() -> Path:
    from member_ml.settings import Settings

    return Settings().data_dir / "bench" / "recs_latency_completejourney"


@pytest.mark.skipif(not (_cj_cache() / "split.json").exists(),
                    reason="no cached Complete Journey recs model (benchmarks.bench_recs writes it)")
def test_complete_journey_one_member_equals_batch():
    """Real data (the cached benchmark model): a quarter of the Complete Journey test members' ALS top 50 alone
    equal the batch chunk's, in order, and a tenth of the members' recommendations alone equal their batch rows
    (all 2,011 members checked this way once; ~10 s here)."""
    import training.member_pyfunc.recs as recs_mod
    from training.member_pyfunc.recs import RecsArtifacts, RecsModel, fold_in, prepare_history

    folder = _cj_cache()
    art = RecsArtifacts.load(folder / "art")
    inp = pd.read_parquet(folder / "test_history.parquet")
    as_of = pd.Timestamp(json.loads((folder / "split.json").read_text(encoding="utf-8"))["cutoff"])
    k = min(int(art.p["n_als"]), art.n_items - 1)
    with recs_mod._single_thread_blas(art):  # as served (threads only add overhead to these small products)
        hb = prepare_history(inp[inp["member_id"].isin(pd.unique(inp["member_id"])[::4])], art, as_of)
        u = fold_in(art, hb)
        rows = np.flatnonzero(np.bincount(hb.m, minlength=hb.b) > 0)
        batch = np.concatenate([top_k_rows(art.als_order, art.item_factors, u[rows[s:s + 256]], k)
                                for s in range(0, len(rows), 256)])
        one = np.stack([recs_mod._als_top(art, u[r:r + 1], k) for r in rows])
    assert len(rows) > 400 and np.array_equal(one, batch)
    model = RecsModel(art)
    members = pd.unique(inp["member_id"])[::10]
    sub = inp[inp["member_id"].isin(members)].reset_index(drop=True)
    t = time.perf_counter()
    together = model.predict(None, sub, params={"as_of": as_of})
    alone = pd.concat([model.predict(None, g.reset_index(drop=True), params={"as_of": as_of})
                       for _, g in sub.groupby("member_id", sort=False)], ignore_index=True)
    key = ["member_id", "rank"]
    pd.testing.assert_frame_equal(alone.sort_values(key).reset_index(drop=True),
                                  together.sort_values(key).reset_index(drop=True), check_exact=True)
    assert time.perf_counter() - t < 120
