"""Spark MLlib ALS behind the recs pyfunc (training/spark_als.py), local mode on a small synthetic store: the
confidence matrix built on Spark equals the one-machine matrix of `fit_candidates`, the MLlib item factors go into
the same `RecsArtifacts`, the pyfunc logged from them loads and recommends, and its quality on a held-out window is
comparable to the implicit-trained artefact's (ALS alone and the whole recommender)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.store import Store

pytestmark = [pytest.mark.spark, pytest.mark.timeout(600)]

CUTOFF = pd.Timestamp("2025-09-01")
HORIZON = 28


@pytest.fixture(scope="module")
def fitted(spark, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from features.synthetic import generate_to_store
    from training.recs.candidates import CandidateConfig, fit_candidates
    from training.recs.train import load_tables, truth_at
    from training.spark_als import spark_item_factors, with_item_factors

    folder = tmp_path_factory.mktemp("spark_als")
    generate_to_store(600, 3, folder / "store", workers=1)
    store = Store(folder / "store")
    tables = load_tables(store)
    cfg = CandidateConfig(factors=16, iterations=8, regularization=0.05, seed=3)
    fc = fit_candidates(tables, CUTOFF, cfg)
    sf = spark_item_factors(spark, store, CUTOFF, cfg, buckets=3)
    return {"store": store, "tables": tables, "cfg": cfg, "fc": fc, "sf": sf,
            "art": with_item_factors(fc.art, sf), "truth": truth_at(tables, CUTOFF, HORIZON)}


def test_confidence_matrix_and_items_equal_the_one_machine_ones(fitted: dict) -> None:
    fc, sf = fitted["fc"], fitted["sf"]
    assert np.array_equal(sf.item_ids, fc.art.item_ids.astype(str))
    np.testing.assert_allclose(sf.item_idf, fc.art.item_idf, rtol=1e-6)
    assert sf.params["avg_len"] == pytest.approx(fc.art.params["avg_len"], rel=1e-9)
    assert sf.members == len(fc.member_ids) and sf.interactions == fc.user_items.nnz
    art = fitted["art"]
    assert art.item_factors.shape == fc.art.item_factors.shape and art.item_factors.dtype == np.float32
    assert (np.abs(art.item_factors).sum(axis=1) > 0).mean() > 0.95  # MLlib gave (almost) every item a factor
    assert art.params["als_engine"] == "spark-mllib"
    # everything but the factors is the one-machine artefact
    assert np.array_equal(art.nbr_idx, fc.art.nbr_idx) and np.array_equal(art.pop_global, fc.art.pop_global)


def _ndcg(art, fitted: dict, members: np.ndarray, als_only: bool) -> float:
    """Mean NDCG@10 over `members` on the held-out window: the whole recommender, or the factors alone (folded-in
    member vectors · item factors, items the member already has excluded)."""
    from training.member_pyfunc.recs import fold_in, prepare_history, recommend
    from training.recs import evaluate as ev

    hist = fitted["fc"].history
    hist = hist[hist["member_id"].astype(str).isin(members)]
    if als_only:
        hb = prepare_history(hist, art, CUTOFF)
        scores = fold_in(art, hb) @ art.item_factors.T
        scores[hb.m, hb.i] = -np.inf
        top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
        recs = pd.DataFrame({"member_id": np.repeat(hb.member_ids.astype(str), 10),
                             "rank": np.tile(np.arange(1, 11), hb.b), "item_id": art.item_ids[top.ravel()]})
    else:
        recs = recommend(art, hist, as_of=CUTOFF, top_n=10)
    truth = fitted["truth"][fitted["truth"]["member_id"].astype(str).isin(members)]
    return float(ev.per_member_metrics(recs, truth)["ndcg_at_10"].mean())


def test_quality_comparable_to_implicit(fitted: dict) -> None:
    members = np.intersect1d(fitted["truth"]["member_id"].astype(str).unique(),
                             fitted["fc"].history["member_id"].astype(str).unique())
    assert len(members) > 50
    got = {(engine, mode): _ndcg(art, fitted, members, als_only=mode == "als")
           for engine, art in (("implicit", fitted["fc"].art), ("mllib", fitted["art"]))
           for mode in ("als", "whole")}
    print("ndcg@10 " + ", ".join(f"{e}/{m} {v:.4f}" for (e, m), v in got.items()))
    # the factors alone: MLlib's within a few points of implicit's (different confidence and λ scaling, see module)
    assert got["mllib", "als"] >= 0.7 * got["implicit", "als"] > 0
    # the whole recommender (repurchase, neighbours, popularity, ranker or blend around the factors)
    assert got["mllib", "whole"] >= 0.9 * got["implicit", "whole"] > 0


def test_logged_pyfunc_loads_and_recommends(fitted: dict, tracking_uri: str, tmp_path: Path) -> None:
    import mlflow

    from training.member_pyfunc.recs import RecsModel
    from training.model_logging import log_pyfunc_model

    hist = fitted["fc"].history
    sample = hist[hist["member_id"].isin(hist["member_id"].drop_duplicates().head(5))].reset_index(drop=True)
    from member_ml.settings import Settings
    from training import tracking

    model = RecsModel(fitted["art"])
    # the project's run helper sets this store's experiment: a bare start_run would reuse whatever experiment id an
    # earlier test in this worker made active, which this fresh store does not have
    tracking.configure(Settings())
    with tracking.start_run("recs", Settings()):
        info = log_pyfunc_model(entry="member_pyfunc.recs:RecsModel",
                                artifacts=model.save_artifacts(tmp_path / "art"), input_example=sample.head(3))
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    out = loaded.unwrap_python_model().predict(None, sample, params={"as_of": CUTOFF.isoformat(), "top_n": 5})
    assert set(out["member_id"].astype(str)) == set(sample["member_id"].astype(str))
    assert out.groupby("member_id").size().eq(5).all() and out["item_id"].isin(fitted["art"].item_ids).all()
    np.testing.assert_array_equal(loaded.unwrap_python_model().art.item_factors, fitted["art"].item_factors)
