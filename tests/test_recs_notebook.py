"""The recommendations notebook runs end to end on a tiny generated store (parameters injected)."""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).parent))
from fixtures_recs import make_tables  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_notebook_runs_on_tiny_store(tmp_path):
    from features.store import Store

    tables = make_tables(n_members=80, n_weeks=16, seed=3)
    store = Store(tmp_path / "store")
    for name in ("orders", "items", "members"):
        store.write(name, tables[name])
    nb = nbformat.read(ROOT / "notebooks" / "05_recommendations.ipynb", as_version=4)
    params = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("# parameters"))
    params.source = (f"# parameters\nSTORE = {str(store.path)!r}\nCUTOFF = '2024-04-01'\nHORIZON_DAYS = 14\n"
                     "FAST = True")
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = "".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                      for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "winner:" in outputs and "global_popularity" in outputs
    assert "popular" in outputs  # the new member got the popularity fallback with its reason
