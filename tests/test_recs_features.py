"""Recommendation ranker inputs and the vectorised serving path: decayed counts, item cycles, batched ALS fold-in,
vectorised reasons, and the leak-free split schedule."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.member_pyfunc.recs import _solve_batched, fold_in, prepare_history, summarise_history
from training.member_pyfunc.recs_rules import _gap_text, reasons
from training.recs.candidates import CandidateConfig, fit_candidates, item_cycles
from training.recs.train import RecsConfig, _check_split, model_input

sys.path.insert(0, str(Path(__file__).parent))
from fixtures_recs import make_tables  # noqa: E402

SMALL = CandidateConfig(factors=8, iterations=8, knn_k=10, n_hist=50, n_als=20, n_knn=20, n_pop=10)


@pytest.fixture(scope="module")
def fitted():
    return fit_candidates(make_tables(n_members=60, n_weeks=16, seed=3), "2024-04-08", SMALL)


def test_decayed_counts_by_hand():
    as_of = pd.Timestamp("2024-03-01")
    orders = pd.DataFrame({
        "order_id": ["o1", "o2", "o2", "o3"], "member_id": ["m1", "m1", "m1", "m1"],
        "ordered_at": [as_of - pd.Timedelta(days=14), as_of - pd.Timedelta(days=56), as_of - pd.Timedelta(days=56),
                       as_of + pd.Timedelta(days=1)],  # o3 is after as_of: ignored
        "item_id": ["a", "a", "a", "a"], "amount": 1.0})
    events = pd.DataFrame({"member_id": ["m1", "m1"], "occurred_at": [as_of - pd.Timedelta(days=1)] * 2,
                           "type": ["view", "cart"], "item_id": ["b", "b"]})
    h = summarise_history(orders, events, as_of).set_index("item_id")
    # two distinct orders (o2 has two lines of the item): 2^-1 + 2^-4 at a 14-day half-life
    assert h.loc["a", "n_bought"] == 2
    assert h.loc["a", "n_bought_hl14"] == pytest.approx(0.5 + 2 ** -4)
    assert h.loc["a", "n_bought_hl56"] == pytest.approx(2 ** -0.25 + 0.5)
    assert h.loc["b", "n_view_hl1"] == pytest.approx(0.5) and h.loc["b", "n_cart_hl1"] == pytest.approx(0.5)
    assert h.loc["b", "n_bought_hl14"] == 0.0
    # without an as_of there is nothing to decay from: unknown, not zero
    assert summarise_history(orders, None, None)["n_bought_hl14"].isna().all()


def test_item_cycles_median_of_repeat_buyers():
    t = pd.Timestamp("2024-01-01")
    hist = pd.DataFrame({
        "member_id": ["m1", "m2", "m3", "m4"], "item_id": ["a", "a", "a", "b"], "n_bought": [3.0, 2.0, 1.0, 4.0],
        "first_bought_at": [t, t, t, t],
        "last_bought_at": [t + pd.Timedelta(days=20), t + pd.Timedelta(days=30), t, t + pd.Timedelta(days=9)]})
    cyc = item_cycles(hist, pd.Index(["a", "b", "c"]))
    assert cyc[0] == pytest.approx(20.0)  # median of 10 (m1) and 30 (m2); m3 bought once
    assert np.isnan(cyc[1]) and np.isnan(cyc[2])  # one repeat buyer only / never bought


def test_batched_solve_is_chunking_invariant(fitted):
    hb = prepare_history(model_input(fitted, fitted.member_ids[:30]), fitted.art, fitted.cutoff)
    full = fold_in(fitted.art, hb)
    from training.member_pyfunc.recs import bm25_confidence, strength

    p = fitted.art.p
    c = bm25_confidence(strength(hb.n_bought, hb.n_cart, hb.n_favorite, hb.n_view, p), hb.m, hb.i, hb.b,
                        fitted.art.item_idf, p)
    ok = c > 0
    tiny = _solve_batched(fitted.art, hb.m[ok], hb.i[ok], c[ok], np.zeros((hb.b, full.shape[1])), budget=1)
    np.testing.assert_allclose(full, tiny.astype(np.float32), rtol=1e-4, atol=1e-5)
    # one member alone gets the same factors as inside the batch
    one = prepare_history(model_input(fitted, fitted.member_ids[3:4]), fitted.art, fitted.cutoff)
    np.testing.assert_allclose(fold_in(fitted.art, one)[0], full[3], rtol=1e-4, atol=1e-5)


def _reference_reason(nb, gap, ne, seed, cat, src) -> str:
    if nb >= 2 and np.isfinite(gap):
        return f"you buy this {_gap_text(float(gap))}"
    if nb >= 1:
        return "you bought this before"
    if ne > 0:
        return "you looked at this recently"
    if src == 1 and seed:
        return f"often bought with {seed}"
    if src == 2:
        return "members with similar baskets buy this"
    if cat:
        return f"popular in {cat} this week"
    return "popular this week"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.one_of(st.none(), st.floats(0.1, 400)), st.integers(0, 2),
                          st.sampled_from(["", "i1", "牛奶"]), st.sampled_from(["", "美妆"]), st.integers(0, 3)),
                min_size=0, max_size=40))
def test_vectorised_reasons_equal_the_rules(rows):
    nb = np.array([r[0] for r in rows], float)
    gap = np.array([np.nan if r[1] is None else r[1] for r in rows], float)
    ne = np.array([r[2] for r in rows], float)
    seed = np.array([r[3] for r in rows], dtype=object)
    cat = np.array([r[4] for r in rows], dtype=object)
    src = np.array([r[5] for r in rows], np.int8)
    got = reasons(n_bought=nb, mean_gap=gap, n_engaged=ne, seed_item=seed, category=cat, source=src)
    assert list(got) == [_reference_reason(*r) for r in zip(nb, gap, ne, seed, cat, src, strict=True)]


def test_split_schedule_never_trains_on_validation_labels():
    orders = pd.DataFrame({"ordered_at": pd.to_datetime(["2017-11-20", "2017-12-03"])})
    cfg = RecsConfig(horizon_days=2, n_train_splits=3, split_step_days=1, als_grid=[])
    cuts = _check_split({"orders": orders}, pd.Timestamp("2017-12-02"), cfg)
    assert [c.date().isoformat() for c in cuts] == ["2017-11-26", "2017-11-27", "2017-11-28", "2017-11-30"]
    *train, val = cuts
    assert all(c + pd.Timedelta(days=cfg.horizon_days) <= val for c in train)
    default = _check_split({"orders": orders}, pd.Timestamp("2017-12-02"), RecsConfig(horizon_days=2, als_grid=[]))
    assert [c.date().isoformat() for c in default] == ["2017-11-26", "2017-11-28", "2017-11-30"]


def test_ranker_settings_are_chosen_on_validation():
    from training.recs.train import run_backtest

    tables = make_tables(n_members=80, n_weeks=16, seed=5)
    cfg = RecsConfig(horizon_days=14, n_train_splits=1, candidates=SMALL, als_grid=[], n_boot=100,
                     ranker_grid=[{"num_leaves": 4, "min_data_in_leaf": 5}], ranker_select_se=0.0)
    bt = run_backtest(tables, cutoff="2024-04-08", cfg=cfg, baselines=False)
    grid = bt.ranker_info["grid"]
    assert len(grid) == 2 and grid[1]["num_leaves"] == 4
    assert bt.ranker_info["validation"]["ranker"] == pytest.approx(max(g["val_ndcg_at_10"] for g in grid), abs=1e-4)
    assert sum(g["chosen"] for g in grid) == 1
    assert any(n.startswith("ranker settings on validation") for n in bt.evaluation.notes)


def test_online_recent_items_equal_the_windowed_training_summary(tmp_path):
    """Training/serving skew: the ranker is trained on `summarise_history(window_days=HISTORY_DAYS)` (what
    `fit_candidates` and `model_input` use) and served from the online `recent_items` table: over data longer than
    the window, both hold the same rows and columns, and the ranker features built from either are identical."""
    from features.definitions.recent_items import RECENT_ITEMS_DAYS
    from features.pipeline import compute_recent_items
    from tests.fixtures_features import make_tables as contract_tables, write_store
    from training.member_pyfunc.recs import HISTORY_DAYS, build_candidates

    assert RECENT_ITEMS_DAYS == HISTORY_DAYS == CandidateConfig().history_days
    as_of = pd.Timestamp("2023-03-01")
    tables = contract_tables(40, 3)
    store = write_store(tmp_path / "store", tables)
    orders = pd.read_parquet(store.path / "orders.parquet")
    events = pd.read_parquet(store.path / "events.parquet")
    assert orders["ordered_at"].min() < as_of - pd.Timedelta(days=HISTORY_DAYS)  # the window matters here
    online = compute_recent_items(store, as_of).set_index(["member_id", "item_id"]).sort_index()
    full = summarise_history(orders, events, as_of)
    train = summarise_history(orders, events, as_of, window_days=HISTORY_DAYS)
    train = train.set_index(["member_id", "item_id"]).sort_index()
    assert len(full[full["n_bought"] > 0]) > len(train[train["n_bought"] > 0])  # older purchases left out on both
    assert online.index.equals(train.index)
    for c in ("n_bought", "spend", "n_bought_hl14", "n_bought_hl56", "n_view", "n_cart", "n_favorite",
              "n_view_hl1", "n_cart_hl1"):
        assert online[c].astype(float).to_numpy() == pytest.approx(train[c].to_numpy(dtype=float), rel=1e-9,
                                                                    nan_ok=True), c
    for c in ("first_bought_at", "last_bought_at", "last_seen_at"):
        assert online[c].astype("datetime64[us]").equals(train[c].astype("datetime64[us]")), c
    # the features the ranker sees: same numbers whether the history came from training or from the online table
    fc = fit_candidates({"orders": orders, "events": events, "items": tables["items"]}, as_of, SMALL)
    assert fc.history["last_seen_at"].min() >= as_of - pd.Timedelta(days=HISTORY_DAYS)
    members = np.asarray(sorted(train.index.get_level_values(0).unique())[:15], dtype=object)
    served = online.reset_index()
    served = served[served["member_id"].isin(members)]
    trained = fc.history[fc.history["member_id"].isin(members)]
    trained = trained.sort_values(["member_id", "item_id"])
    x_served = build_candidates(fc.art, prepare_history(served, fc.art, as_of))
    x_trained = build_candidates(fc.art, prepare_history(trained, fc.art, as_of))
    assert (x_served.i == x_trained.i).all() and (x_served.m == x_trained.m).all()
    np.testing.assert_allclose(x_served.X, x_trained.X, rtol=1e-5, equal_nan=True)
