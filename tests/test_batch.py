"""Batch scoring (serving/batch.py, `member-ml score`) on a small trained store: a member's batch row equals the
online /score answer, chunking changes nothing, output is atomic (an interrupted run leaves nothing), CSV works, and
the CLI runs score → campaign build → campaign evaluate end to end."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.store import Store
from serving.batch import read_replenishment, read_scores, score_store
from tests.fixtures_batch import AS_OF, MODELS, trained_champions

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Store + champions (trained once per module), the loaded models, and one batch run at AS_OF: 3 chunks scored
    by 2 worker processes (the serial path is run by the other tests)."""
    folder = tmp_path_factory.mktemp("batch")
    with trained_champions(folder) as (env, models):
        out = folder / "scores"
        manifest = score_store(Store(env["store"]), AS_OF, out, models, chunk_size=120, workers=2)
        yield {**env, "folder": folder, "models": models, "scores": out, "manifest": manifest}


def test_manifest_and_columns(trained: dict) -> None:
    m = trained["manifest"]
    df, m2 = read_scores(trained["scores"])
    assert m == m2 and m["members"] == len(df) and df["member_id"].is_unique
    assert m["chunks"] >= 2 and m["workers"] == 2 and set(m["models"]) == set(MODELS)
    assert all(m["models"][k]["version"] == "1" for k in MODELS)
    assert m["as_of"].startswith(AS_OF) and m["seconds"]["total"] > 0
    assert {"features", "models", "writing"} <= set(m["seconds"])
    for c in ("tier", "points_balance", "value_segment", "strategy", "churn_probability", "churn_reasons", "ltv",
              "value_at_risk", "p_30", "next_purchase_date", "rec_items", "marketing_consent", "active_hour"):
        assert c in df.columns, c
    assert df["churn_probability"].between(0, 1).all() and (df["ltv"] >= 0).all()
    assert (df["rec_items"].map(len) == 10).all()
    np.testing.assert_allclose(df["value_at_risk"], df["churn_probability"] * df["ltv"])
    # the store's members before AS_OF, each once
    from features.pipeline import compute_features

    feats = compute_features(Store(trained["store"]), AS_OF)
    assert set(feats["member_id"]) == set(df["member_id"])
    rep = read_replenishment(trained["scores"])
    assert len(rep) == m["replenishment_pairs"] and rep["reminder"].all()


def test_batch_row_equals_the_online_score_answer(trained: dict, tmp_path: Path) -> None:
    from features.online import materialize
    from loyalty.config import load_config
    from serving.compose import next_purchase_answer
    from serving.config import ServingConfig
    from serving.online import open_lookup
    from serving.schemas import ScoreRequest
    from serving.scoring import Scorer

    store = Store(trained["store"])
    materialize(store, AS_OF, tmp_path / "online.duckdb")
    lcfg = load_config()
    lookup = open_lookup(tmp_path / "online.duckdb", store.path, lcfg)
    scorer = Scorer(ServingConfig(models=list(MODELS), online_table=None, store=None), lcfg, trained["models"],
                    lookup, None, store.read_optional("items"))
    df, manifest = read_scores(trained["scores"])
    df = df.set_index("member_id")
    picks = [df["orders_lifetime"].idxmax(), df["orders_lifetime"].idxmin(), df["churn_probability"].idxmax(),
             *df.sample(5, random_state=1).index]
    for mid in dict.fromkeys(picks):
        row = df.loc[mid]
        r = scorer.score(ScoreRequest(member_id=mid, top_n=10))
        assert r.unavailable == {} and r.model_versions == {k: v["version"] for k, v in manifest["models"].items()}
        lv = r.loyalty
        assert (lv.tier, lv.tier_rank, lv.next_tier, lv.value_segment, lv.lifecycle_segment, lv.strategy) == (
            row["tier"], row["tier_rank"], None if pd.isna(row["next_tier"]) else row["next_tier"],
            row["value_segment"], row["lifecycle_segment"], row["strategy"]), mid
        assert lv.points_balance == row["points_balance"] and lv.points_expiring_30d == row["points_expiring_30d"]
        assert lv.benefits.discount_rate == row["discount_rate"] and lv.benefits.birthday_gift == row["birthday_gift"]
        assert (lv.spend_to_next_tier is None) == pd.isna(row["spend_to_next_tier"])
        assert r.churn.probability == pytest.approx(row["churn_probability"], rel=1e-9, abs=1e-12), mid
        assert r.churn.reasons == list(row["churn_reasons"])
        assert r.ltv.value == pytest.approx(row["ltv"], rel=1e-9, abs=1e-9)
        assert r.next_purchase.expected_date == next_purchase_answer(row).expected_date
        for d, p in r.next_purchase.probability_within_days.items():
            assert p == pytest.approx(row[f"p_{d}"], rel=1e-9, abs=1e-12)
        assert [x.item_id for x in r.recommendations] == list(row["rec_items"]), mid
        assert [x.reason for x in r.recommendations] == list(row["rec_reasons"])
        np.testing.assert_allclose([x.score for x in r.recommendations], list(row["rec_scores"]), rtol=1e-9)


def test_chunk_size_does_not_change_the_scores(trained: dict, tmp_path: Path) -> None:
    m = score_store(Store(trained["store"]), AS_OF, tmp_path / "one", trained["models"], chunk_size=100_000,
                    fmt="csv")
    assert m["chunks"] == 1 and m["format"] == "csv"
    one, _ = read_scores(tmp_path / "one")
    many, _ = read_scores(trained["scores"])
    one = one.set_index("member_id").sort_index()
    many = many.set_index("member_id").loc[one.index]
    for c in ("churn_probability", "ltv", "p_7", "p_90", "points_balance", "spend_to_next_tier", "active_hour"):
        np.testing.assert_allclose(one[c].astype(float), many[c].astype(float), rtol=1e-6, equal_nan=True, err_msg=c)
    for c in ("tier", "lifecycle_segment", "strategy"):
        assert (one[c].astype(str) == many[c].astype(str)).all(), c
    assert one["rec_items"].tolist() == many["rec_items"].tolist()  # lists survive the CSV round trip
    assert one["churn_reasons"].tolist() == many["churn_reasons"].tolist()


def test_interrupted_run_leaves_no_partial_output(trained: dict, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import serving.batch as batch

    calls = {"n": 0}
    real = batch.score_chunk

    def flaky(*a, **k):  # noqa: ANN002, ANN003, ANN202
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated interruption")
        return real(*a, **k)

    monkeypatch.setattr(batch, "score_chunk", flaky)
    out = tmp_path / "scores"
    with pytest.raises(KeyboardInterrupt):
        score_store(Store(trained["store"]), AS_OF, out, trained["models"], chunk_size=120, workers=1)
    assert not out.exists()
    assert os.listdir(tmp_path) == []  # no temporary folder left behind either
    # an earlier complete output survives a failed re-run untouched
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"previous": True}))
    calls["n"] = 0
    with pytest.raises(KeyboardInterrupt):
        score_store(Store(trained["store"]), AS_OF, out, trained["models"], chunk_size=120, workers=1)
    assert json.loads((out / "manifest.json").read_text()) == {"previous": True}


def test_cli_score_campaign_build_and_evaluate(trained: dict, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    from member_ml.cli import app

    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained["tracking_uri"])
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    scores = tmp_path / "scores"
    r = runner.invoke(app, ["score", "--store", trained["store"], "--as-of", AS_OF, "--out", str(scores),
                            "--chunk-size", "200", "--top-n", "5"])
    assert r.exit_code == 0, r.output
    assert "batch scores" in r.output and (scores / "manifest.json").exists()
    camp = tmp_path / "campaign"
    r = runner.invoke(app, ["campaign", "build", "--scores", str(scores), "--out", str(camp)])
    assert r.exit_code == 0, r.output
    assert "win_back" in r.output and (camp / "summary.csv").exists() and (camp / "win_back.parquet").exists()
    summary = pd.read_csv(camp / "summary.csv")
    assert summary["members"].sum() > 0
    w = pd.read_parquet(camp / "win_back.parquet")
    assert len(w) and w["reason"].str.contains("at risk").all() and (w["recommended_items"].map(len) == 3).all()
    res = tmp_path / "eval.json"
    r = runner.invoke(app, ["campaign", "evaluate", "--campaign", str(camp), "--store", trained["store"],
                            "--out", str(res)])
    assert r.exit_code == 0, r.output
    body = json.loads(res.read_text())
    assert body["days"] == 14 and {a["audience"] for a in body["audiences"]} == set(summary["audience"])
    # clear errors, no tracebacks
    r = runner.invoke(app, ["score", "--store", str(tmp_path / "nope"), "--as-of", AS_OF, "--out", str(scores)])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = runner.invoke(app, ["campaign", "build", "--scores", str(tmp_path), "--out", str(camp)])
    assert r.exit_code == 2 and "not a scores folder" in r.output


def test_score_fails_clearly_without_champions(trained: dict, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    from member_ml.cli import app

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    from tests.fixtures_models import initialised_mlflow_db, use_template_db

    use_template_db(initialised_mlflow_db(), f"sqlite:///{tmp_path / 'empty.db'}")
    r = CliRunner().invoke(app, ["score", "--store", trained["store"], "--as-of", AS_OF, "--out",
                                 str(tmp_path / "s"), "--models", "churn"])
    assert r.exit_code == 2 and "champion" in r.output and not (tmp_path / "s").exists()


@pytest.mark.slow
def test_campaign_notebook_runs(trained: dict) -> None:
    import nbformat
    from nbclient import NotebookClient

    from tests.fixtures_batch import ROOT

    nb = nbformat.read(ROOT / "notebooks" / "06_campaigns.ipynb", as_version=4)
    params = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("# parameters"))
    params.source = (f"# parameters\nSCORES = {str(trained['scores'])!r}\nAUDIENCES = None\n"
                     f"STORE = {trained['store']!r}\nOUT = {str(trained['folder'] / 'nb_campaign')!r}")
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    text = "".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                   for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "win_back" in text and "expected value" in text
    assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
