"""End to end on a small synthetic store: `member-ml train timing` logs, registers and promotes a version whose
pyfunc loads from the registry without `training`, and carries the replenishment estimator;
`member-ml evaluate timing` writes the DESIGN §10 table; the estimated cycles match the store's true cycles."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from member_ml.cli import app

FAST = """
hazard:
  num_boost_round: 40
  early_stopping_rounds: 10
  min_data_in_leaf: 20
train_cutoffs: 3
bootstrap: 30
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from features.synthetic import generate, write_store

    out = tmp_path_factory.mktemp("timing") / "store"
    write_store(generate(400, 11, start="2024-01-01", end="2024-12-31"), out)
    return out


@pytest.fixture()
def config(tmp_path: Path) -> Path:
    p = tmp_path / "timing.yaml"
    p.write_text(FAST, encoding="utf-8")
    return p


def test_train_registers_promotes_and_serves(store: Path, config: Path, tracking_uri: str) -> None:
    import mlflow
    import pandas as pd

    from training.registry import champion_version, load_backtest

    r = CliRunner().invoke(app, ["train", "timing", "--store", str(store), "--horizon", "30",
                                 "--config", str(config)])
    assert r.exit_code == 0, r.output
    assert "registered timing version 1" in r.output and "promoted" in r.output
    mlflow.set_tracking_uri(tracking_uri)
    champ = champion_version("timing")
    assert champ is not None and str(champ.version) == "1"
    run = mlflow.get_run(champ.tags["run_id"])
    assert run.data.tags["approach"] == "lightgbm-discrete-time-hazard"
    assert "censor" in run.data.tags["mlflow.note.content"]
    assert 0.5 < run.data.metrics["c_index"] <= 1 and "baseline.mean_gap.c_index" in run.data.metrics
    loaded = mlflow.pyfunc.load_model("models:/timing@champion")
    test = load_backtest(champ.tags["run_id"])["test"]
    out = loaded.predict(test.head(20))
    assert {"p_7", "p_90", "median_days", "next_purchase_date"} <= set(out.columns) and len(out) == 20
    model = loaded.unwrap_python_model()
    assert type(model).__module__ == "member_pyfunc.timing"  # the model's own bundled code
    orders = pd.read_parquet(store / "orders.parquet")
    cycles = model.replenishment(orders, "2024-12-01", items=pd.read_parquet(store / "items.parquet"))
    assert len(cycles) > 0 and cycles["reminder"].any()
    assert set(model.due_within(cycles, 7)["member_id"]) <= set(cycles["member_id"])


def test_evaluate_writes_results_table(store: Path, config: Path, tmp_path: Path) -> None:
    out = tmp_path / "timing.json"
    r = CliRunner().invoke(app, ["evaluate", "timing", "--store", str(store), "--cutoff", "2024-10-01",
                                 "--horizon", "30", "--config", str(config), "--no-baselines", "--out", str(out),
                                 "--dataset", "synthetic"])
    assert r.exit_code == 0, r.output
    assert "c_index" in r.output and "mean_gap" in r.output
    doc = json.loads(out.read_text())
    entry = doc["datasets"]["synthetic"]["next_purchase"]
    assert entry["split"]["cutoff"] == "2024-10-01" and entry["split"]["horizon_days"] == 30
    assert set(entry["model"]) >= {"c_index", "auc_14d", "auc_30d", "brier_14d", "brier_30d", "ibs", "median_mae"}
    assert "mean_gap" in entry["baselines"] and "c_index" in entry["gain_ci95"]
    assert entry["replenishment"]["split"]["pairs"] > 0
    assert any("BG/NBD" in n for n in entry["notes"])


def test_evaluate_rejects_a_window_past_the_data(store: Path) -> None:
    r = CliRunner().invoke(app, ["evaluate", "timing", "--store", str(store), "--cutoff", "2024-12-15",
                                 "--horizon", "30", "--no-baselines"])
    assert r.exit_code != 0 and "runs past the last order" in r.output


def test_cycles_match_the_synthetic_truth(store: Path) -> None:
    import pandas as pd

    from training.timing.replenishment import cycle_error_vs_truth, estimate_cycles

    cycles = estimate_cycles(pd.read_parquet(store / "orders.parquet"), "2025-01-01",
                             items=pd.read_parquet(store / "items.parquet"))
    err = cycle_error_vs_truth(cycles, pd.read_parquet(store / "ground_truth_cycles.parquet"))
    assert err["pairs"] >= 30
    assert err["median_rel_error"] < 0.15
