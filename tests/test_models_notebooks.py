"""The churn and LTV notebooks run top to bottom on a small store (parameters injected into the `parameters` cell)."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.fixtures_models import make_model_store

ROOT = Path(__file__).resolve().parent.parent


def run_notebook(name: str, params: dict, cwd: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


@pytest.mark.parametrize("name", ["02_churn.ipynb", "03_ltv.ipynb"])
def test_notebook_runs_on_a_small_store(name, tmp_path):
    store = make_model_store(tmp_path / "store", n_members=200)
    params = {"STORE": str(store.path), "CUTOFF": "2024-01-01", "HORIZON": 60, "BGNBD": False, "TRACK": False,
              "OVERRIDES": {"num_boost_round": 40, "early_stopping_rounds": 10, "n_boot": 50,
                            "max_train_cutoffs": 2}}
    nb = run_notebook(name, params, tmp_path)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3  # the plots were shown
    html = " ".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert ("reason_1" in html) if name == "02_churn.ipynb" else ("ltv" in html)
