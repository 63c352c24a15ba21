"""End to end through the command line on a small store: train (log, register, gate), evaluate (table + §10 JSON),
models, promote, rollback, and clear errors."""
from __future__ import annotations

import json

import mlflow
import pytest
from typer.testing import CliRunner

from member_ml.cli import app

from tests.fixtures_models import FAST_CHURN_YAML, FAST_LTV_YAML, make_model_store

runner = CliRunner()


def invoke(*args: str) -> str:
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, (res.output, res.exception)
    return " ".join(res.output.split())  # rich wraps long lines to the terminal width


def test_train_evaluate_promote_rollback(tracking_uri, tmp_path):
    store = make_model_store(tmp_path / "store", n_members=200)
    cfg = tmp_path / "churn.yaml"
    cfg.write_text(FAST_CHURN_YAML)
    ltv_cfg = tmp_path / "ltv.yaml"
    ltv_cfg.write_text(FAST_LTV_YAML)

    out = invoke("train", "churn", "--store", str(store.path), "--horizon", "60", "--config", str(cfg))
    assert "registered churn version 1" in out and "no champion yet" in out
    out = invoke("train", "ltv", "--store", str(store.path), "--horizon", "60", "--config", str(ltv_cfg),
                 "--cutoff", "2023-12-01")
    assert "registered ltv version 1" in out

    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("member-ml/churn")
    run = client.search_runs([exp.experiment_id])[0]
    assert run.data.metrics["auc"] > 0.75 and "baseline.recency.auc" in run.data.metrics
    assert run.data.tags["store.fingerprint"] == store.fingerprint() and run.data.tags["horizon_days"] == "60"
    assert "git_commit" in run.data.tags or "mlflow.source.git.commit" not in run.data.tags
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/roc.png", "plots/calibration.png", "plots/gain.png", "plots/feature_importance.png"} <= arts
    assert run.inputs.dataset_inputs and run.inputs.dataset_inputs[0].dataset.name == "churn-training-set"

    champ = mlflow.pyfunc.load_model("models:/churn@champion").unwrap_python_model()
    frame = store.read("orders").head(0)  # the model needs features, not orders: a clear error names them
    with pytest.raises(ValueError, match="lacks column"):
        champ.predict(None, frame)

    # a second training on the same backtest is not better than itself: the gate refuses and says why
    out = invoke("train", "churn", "--store", str(store.path), "--horizon", "60", "--config", str(cfg))
    assert "registered churn version 2" in out and "not promoted" in out and "does not beat champion v1" in out
    out = invoke("promote", "churn", "--version", "2", "--force")
    assert "forced" in out
    out = invoke("models")
    assert "churn" in out and "ltv" in out
    out = invoke("rollback", "churn")
    assert "v2 → v1" in out

    result_file = tmp_path / "results.json"
    out = invoke("evaluate", "churn", "--store", str(store.path), "--cutoff", "2024-01-01", "--horizon", "60",
                 "--config", str(cfg), "--no-baselines", "--out", str(result_file), "--dataset", "synthetic")
    assert "recency" in out and "auc" in out
    doc = json.loads(result_file.read_text())
    entry = doc["datasets"]["synthetic"]["churn"]
    assert entry["split"]["cutoff"] == "2024-01-01" and entry["split"]["horizon_days"] == 60
    assert set(entry["model"]) >= {"auc", "pr_auc", "brier", "log_loss", "lift_top_decile"}
    assert entry["baselines"]["recency"]["auc"] > 0.5 and len(entry["gain_ci95"]["auc"]) == 2
    assert doc["machine"]["cpus"] >= 1


def fails(*args: str) -> str:
    res = runner.invoke(app, list(args))
    assert res.exit_code != 0
    return " ".join(res.output.split())


def test_cli_errors_are_clear(tracking_uri, tmp_path):
    assert "unknown model 'timing-x'" in fails("train", "timing-x", "--store", str(tmp_path))
    assert "does not exist" in fails("evaluate", "churn", "--store", str(tmp_path / "nope"), "--cutoff", "2024-01-01")
    store = make_model_store(tmp_path / "store", n_members=40)
    assert "runs past the last order" in fails("evaluate", "churn", "--store", str(store.path), "--cutoff", "2024-03-01",
                              "--horizon", "60")
    assert "no champion" in fails("rollback", "churn")
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: -1\n")
    assert "learning_rate" in fails("evaluate", "churn", "--store", str(store.path), "--cutoff", "2024-01-01",
                              "--config", str(bad))
