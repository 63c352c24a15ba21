"""Recommendation models: candidate generators, serving scorer, rules, metrics, pyfunc round trip and the CLI."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from training.member_pyfunc.recs import (
    HistoryError, RecsArtifacts, RecsModel, fold_in, prepare_history, recommend, summarise_history)
from training.recs import evaluate as ev
from training.recs.candidates import CandidateConfig, fit_candidates
from training.recs.rules import RulesConfig
from training.recs.train import RecsConfig, model_input, run_backtest

sys.path.insert(0, str(Path(__file__).parent))
from fixtures_recs import make_tables  # noqa: E402

SMALL = CandidateConfig(factors=8, iterations=8, knn_k=10, n_hist=50, n_als=20, n_knn=20, n_pop=10)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return make_tables(n_members=100, n_weeks=20, seed=1)


@pytest.fixture(scope="module")
def fitted(tables):
    return fit_candidates(tables, "2024-05-06", SMALL)


def _checkerboard() -> dict[str, pd.DataFrame]:
    """Two blocks: members 0-19 buy items a0-a9, members 20-39 buy b0-b9; member 0 never bought a9."""
    rows = []
    t = pd.Timestamp("2024-01-01")
    for m in range(40):
        block = "a" if m < 20 else "b"
        for k in range(10):
            if m == 0 and k == 9:
                continue
            rows.append((f"o{m}-{k}", f"m{m}", t + pd.Timedelta(hours=m * 10 + k), 1.0, f"{block}{k}"))
    orders = pd.DataFrame(rows, columns=["order_id", "member_id", "ordered_at", "amount", "item_id"])
    return {"orders": orders}


def test_checkerboard_held_out_item_ranked_first():
    tb = _checkerboard()
    no_rebuy = RulesConfig(exclude_recent_non_consumable_days=1e6, infer_consumable_repeat_rate=1.0)
    fc = fit_candidates(tb, "2024-02-01", CandidateConfig(factors=8, iterations=30, regularization=0.01,
                                                          knn_k=12, n_pop=5), no_rebuy)
    recs = recommend(fc.art, fc.history[fc.history["member_id"] == "m0"], as_of="2024-02-01")
    assert recs["item_id"].iloc[0] == "a9"
    assert not recs["item_id"].isin([f"a{k}" for k in range(9)]).any()  # bought, not consumable: excluded
    # ALS alone and item-kNN alone agree
    for base in (ev.als_baseline(fc, np.array(["m0"])), ev.knn_baseline(fc, np.array(["m0"]), filter_bought=True)):
        assert base["item_id"].iloc[0] == "a9"


def test_batch_equals_single(fitted):
    members = fitted.member_ids[:12]
    inp = model_input(fitted, members)
    batch = recommend(fitted.art, inp, as_of=fitted.cutoff)
    for m in members:
        one = recommend(fitted.art, inp[inp["member_id"] == m], as_of=fitted.cutoff)
        b = batch[batch["member_id"] == m].reset_index(drop=True)
        assert one["item_id"].tolist() == b["item_id"].tolist()
        np.testing.assert_allclose(one["score"].to_numpy(), b["score"].to_numpy(), rtol=1e-5, atol=1e-6)


def test_fold_in_matches_implicit(fitted):
    hb = prepare_history(fitted.history[fitted.history["member_id"].isin(fitted.member_ids[:5])], fitted.art,
                         fitted.cutoff)
    ours = fold_in(fitted.art, hb)
    rows = pd.Index(fitted.member_ids).get_indexer(hb.member_ids)
    theirs = fitted.als.recalculate_user(rows, fitted.user_items[rows])
    np.testing.assert_allclose(ours, theirs, rtol=2e-3, atol=2e-3)


def test_cold_start_gets_popularity_and_segment(fitted, tables):
    cold = pd.DataFrame({"member_id": ["new-1", "new-2"], "segment": [None, "浙江"]})
    recs = recommend(fitted.art, cold, as_of=fitted.cutoff)
    glob = fitted.art.item_ids[fitted.art.pop_global[:10]]
    assert set(recs[recs["member_id"] == "new-1"]["item_id"]) == set(glob)
    assert set(recs[recs["member_id"] == "new-2"]["item_id"]) <= set(fitted.art.item_ids[fitted.art.pop_segment[
        list(fitted.art.segments).index("浙江")]])
    assert recs["reason"].str.startswith("popular").all()


def test_reasons_explain_repurchase(fitted):
    inp = model_input(fitted, fitted.member_ids[:20])
    recs = recommend(fitted.art, inp, as_of=fitted.cutoff)
    assert recs["reason"].str.contains(r"you buy this every ~\d+ (days|weeks)").any()
    assert recs["reason"].notna().all() and (recs["reason"].str.len() > 0).all()
    assert (recs.groupby("member_id")["rank"].max() <= 10).all()


def test_history_validation(fitted):
    bad = pd.DataFrame({"item_id": ["i1"], "n_bought": [1.0], "last_bought_at": [pd.Timestamp("2024-01-01")]})
    with pytest.raises(HistoryError, match="member_id"):
        prepare_history(bad, fitted.art, "2024-05-01")
    future = bad.assign(member_id="m1", last_bought_at=pd.Timestamp("2030-01-01"))
    with pytest.raises(HistoryError, match="point-in-time"):
        prepare_history(future, fitted.art, "2024-05-01")


def test_summarise_history_is_point_in_time_and_nets_refunds(tables):
    o = tables["orders"].head(200).copy()
    cut = o["ordered_at"].sort_values().iloc[100]
    h1 = summarise_history(o, None, cut)
    later = o.copy()
    later.loc[later["ordered_at"] >= cut, "item_id"] = "zzz"  # changing the future changes nothing
    pd.testing.assert_frame_equal(h1, summarise_history(later, None, cut))
    first = o.iloc[[0]]
    refund = first.assign(status="refunded", ordered_at=first["ordered_at"] + pd.Timedelta(hours=1))
    h2 = summarise_history(pd.concat([first, refund]), None, None)
    assert h2.empty or h2["n_bought"].sum() == 0


def test_metrics_by_hand():
    recs = pd.DataFrame({"member_id": ["a"] * 3 + ["b"], "rank": [1, 2, 3, 1], "item_id": ["x", "y", "z", "q"]})
    truth = pd.DataFrame({"member_id": ["a", "a", "b", "c"], "item_id": ["y", "z", "w", "x"]})
    pm = ev.per_member_metrics(recs, truth)
    a = pm.loc["a"]
    dcg = 1 / np.log2(3) + 1 / np.log2(4)
    assert a["ndcg_at_10"] == pytest.approx(dcg / (1 + 1 / np.log2(3)))
    assert a["precision_at_10"] == pytest.approx(0.2)
    assert a["recall_at_10"] == pytest.approx(1.0)
    assert a["map_at_10"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert pm.loc["b"].sum() == 0 and pm.loc["c"].sum() == 0  # c has no recommendations: scores 0


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 15), min_size=1, max_size=10, unique=True),
       st.lists(st.integers(0, 15), min_size=1, max_size=8, unique=True))
def test_metrics_bounded_and_perfect_ranking_is_one(ranked, bought):
    recs = pd.DataFrame({"member_id": "m", "rank": np.arange(1, len(ranked) + 1), "item_id": [f"i{r}" for r in ranked]})
    truth = pd.DataFrame({"member_id": "m", "item_id": [f"i{b}" for b in bought]})
    pm = ev.per_member_metrics(recs, truth).iloc[0]
    assert ((pm >= 0) & (pm <= 1 + 1e-12)).all()
    perfect = pd.DataFrame({"member_id": "m", "rank": np.arange(1, len(bought) + 1), "item_id": truth["item_id"]})
    assert ev.per_member_metrics(perfect, truth).iloc[0]["ndcg_at_10"] == pytest.approx(1.0)


@settings(max_examples=15, deadline=None)
@given(exclude_cat=st.sampled_from(["美妆", "母婴", "食品"]), allow=st.sets(st.integers(0, 59), min_size=3, max_size=30),
       days=st.sampled_from([0.0, 14.0, 1e6]))
def test_rules_always_hold(fitted, exclude_cat, allow, days):
    art = RecsArtifacts(**{k: getattr(fitted.art, k) for k in RecsArtifacts.__dataclass_fields__ if k != "params"},
                        params={**fitted.art.params})
    allow_ids = [f"i{a}" for a in allow]
    art.params["rules"] = RulesConfig(exclude_categories=[exclude_cat], allow_items=allow_ids,
                                      exclude_recent_non_consumable_days=days).model_dump()
    inp = model_input(fitted, fitted.member_ids[:10])
    recs = recommend(art, inp, as_of=fitted.cutoff)
    cats = pd.Series(art.categories[art.item_category[art.item_index.get_indexer(recs["item_id"])]])
    assert not (cats == exclude_cat).any()
    assert recs["item_id"].isin(allow_ids).all()
    if days > 0:
        h = inp.merge(recs, on=["member_id", "item_id"])
        recent = (fitted.cutoff - h["last_bought_at"]).dt.days < days
        cons = art.consumable[art.item_index.get_indexer(h["item_id"])]
        assert not (recent & ~cons).any()


def test_backtest_beats_popularity_and_keeps_every_baseline(tables):
    cfg = RecsConfig(horizon_days=14, n_train_splits=1, candidates=SMALL, als_grid=[], n_boot=200)
    bt = run_backtest(tables, cutoff="2024-05-06", cfg=cfg)
    r = bt.evaluation.to_result()
    assert set(r["baselines"]) == {"global_popularity", "repurchase_frequency", "item_knn", "als", "als_unfiltered"}
    assert r["model"]["ndcg_at_10"] > r["baselines"]["global_popularity"]["ndcg_at_10"]
    assert r["split"]["members"] == bt.truth["member_id"].nunique()
    assert r["winner"] in ("ranker", "blend")
    lo, hi = r["gain_ci95"]["ndcg_at_10"]
    assert lo <= hi


def test_pyfunc_round_trip_needs_no_training_code(tmp_path, tracking_uri, fitted):
    import mlflow

    from training.model_logging import log_pyfunc_model

    model = RecsModel(fitted.art)
    inp = model_input(fitted, fitted.member_ids[:5]).reset_index(drop=True)
    expected = model.predict(None, inp, params={"as_of": fitted.cutoff})
    mlflow.set_tracking_uri(tracking_uri)
    exp = mlflow.create_experiment("recs-pyfunc-test", artifact_location=(tmp_path / "artifacts").as_uri())
    mlflow.set_experiment(experiment_id=exp)  # logged models follow the current experiment, not the run's
    with mlflow.start_run(experiment_id=exp):  # artifacts under tmp_path, never ./mlruns
        artifacts = model.save_artifacts(tmp_path / "art")
        info = log_pyfunc_model(entry="member_pyfunc.recs:RecsModel", artifacts=artifacts,
                                input_example=inp.head(3), output_example=model.predict(None, inp.head(3),
                                                                                         params={"as_of": fitted.cutoff}))
    inp.to_parquet(tmp_path / "inp.parquet")
    expected.to_parquet(tmp_path / "expected.parquet")
    script = textwrap.dedent(f"""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "training" or name.startswith("training.") or name == "implicit":
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        import mlflow, pandas as pd
        mlflow.set_tracking_uri({tracking_uri!r})
        m = mlflow.pyfunc.load_model({info.model_uri!r}).unwrap_python_model()
        out = m.predict(None, pd.read_parquet({str(tmp_path / 'inp.parquet')!r}), params={{"as_of": "{fitted.cutoff}"}})
        exp = pd.read_parquet({str(tmp_path / 'expected.parquet')!r})
        pd.testing.assert_frame_equal(out.reset_index(drop=True), exp, check_dtype=False)
        print("ok")
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert res.returncode == 0 and "ok" in res.stdout, (res.stdout[-2000:], res.stderr[-3000:])


def test_cli_train_and_evaluate(tmp_path, tracking_uri, tables, monkeypatch):
    from typer.testing import CliRunner

    monkeypatch.chdir(tmp_path)  # any MLflow default ./mlruns lands in tmp_path, not the checkout

    from features.store import Store
    from member_ml.cli import app

    store = Store(tmp_path / "store")
    for name in ("orders", "items", "members"):
        store.write(name, tables[name])
    cfg = tmp_path / "recs.yaml"
    cfg.write_text("horizon_days: 14\nn_train_splits: 1\nn_boot: 200\nals_grid: [{factors: 8}]\n"
                   "candidates: {factors: 8, iterations: 8, knn_k: 10, n_hist: 50, n_als: 20, n_knn: 20}\n",
                   encoding="utf-8")
    runner = CliRunner()
    res = runner.invoke(app, ["train", "recs", "--store", str(store.path), "--cutoff", "2024-05-06",
                              "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert "registered recs version 1" in res.output and "promoted" in res.output
    out = tmp_path / "recs.json"
    res = runner.invoke(app, ["evaluate", "recs", "--store", str(store.path), "--cutoff", "2024-05-06",
                              "--horizon", "14", "--config", str(cfg), "--out", str(out), "--dataset", "synthetic"])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    task = doc["datasets"]["synthetic"]["recommendation"]
    assert {"split", "model", "baselines", "gain_ci95"} <= set(task)
    res = runner.invoke(app, ["evaluate", "recs", "--store", str(store.path), "--cutoff", "2023-01-01",
                              "--config", str(cfg)])
    assert res.exit_code != 0 and "recs:" in res.output


@given(st.lists(st.tuples(st.integers(0, 5), st.floats(-1e3, 1e3)), max_size=40))
@settings(max_examples=60, deadline=None)
def test_group_reduce_equals_ufunc_at(rows):
    """The per-member max/min used for features is exactly `np.maximum.at` / `np.minimum.at` (members without rows
    keep the initial value)."""
    from training.member_pyfunc.recs import _group_reduce

    rows = sorted(rows, key=lambda r: r[0])
    m = np.array([r[0] for r in rows], dtype=np.int64)
    v = np.array([r[1] for r in rows], dtype=float)
    starts = np.r_[0, np.flatnonzero(np.diff(m)) + 1] if len(m) else np.zeros(0, np.int64)
    for op, init in ((np.maximum, 0.0), (np.minimum, np.inf)):
        want = np.full(6, init)
        op.at(want, m, v)
        np.testing.assert_array_equal(_group_reduce(op, m, starts, v, 6, init), want)
