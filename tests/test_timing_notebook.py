"""The next-purchase notebook runs end to end on a small generated store (parameters injected)."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_notebook_runs_on_small_store(tmp_path: Path) -> None:
    from features.synthetic import generate, write_store

    store = tmp_path / "store"
    write_store(generate(300, 5, start="2024-01-01", end="2024-12-31"), store)
    nb = nbformat.read(ROOT / "notebooks" / "04_next_purchase.ipynb", as_version=4)
    params = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("# parameters"))
    params.source = (f"# parameters\nSTORE = {str(store)!r}\nCUTOFF = '2024-10-01'\nHORIZON_DAYS = 30\n"
                     "FAST = True\nBASELINES = False")
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = "".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                      for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "c_index" in outputs and "mean_gap" in outputs
    assert "category due within 7 days" in outputs and "against the synthetic truth" in outputs
    assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
