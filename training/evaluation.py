"""Model-versus-baselines comparison on one split, in the DESIGN §10 results shape, shared by every trainer.

`compare(y, model, baselines, metrics, primary)` computes each metric for the model and each baseline and the paired
bootstrap 95% interval of the model's gain over the *best* baseline (best by the primary metric); `Evaluation`
renders as a tidy table (CLI, notebooks) and as the §10 dataset entry (`to_result()`).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training import metrics as M


@dataclass
class Evaluation:
    """Metrics of a model and its baselines on the same members, with the gain interval over the best baseline."""

    task: str
    split: dict[str, Any]
    model: dict[str, float]
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    gain_ci95: dict[str, list[float]] = field(default_factory=dict)
    best_baseline: str | None = None
    primary: str | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_result(self) -> dict[str, Any]:
        """The `<task>` entry of DESIGN §10 (split, model, baselines, gain_ci95), plus best_baseline and notes."""
        out: dict[str, Any] = {"split": self.split, "model": _round(self.model),
                               "baselines": {k: _round(v) for k, v in self.baselines.items()},
                               "gain_ci95": {k: [round(a, 4), round(b, 4)] for k, (a, b) in self.gain_ci95.items()}}
        if self.best_baseline:
            out["best_baseline"] = self.best_baseline
        if self.notes:
            out["notes"] = self.notes
        out.update(self.extra)
        return out

    def table_rows(self) -> list[dict[str, Any]]:
        """Rows metric × (model, each baseline, gain CI over the best baseline) for console.table."""
        rows = []
        for m, v in self.model.items():
            row: dict[str, Any] = {"metric": m, "model": v}
            for b, mv in self.baselines.items():
                row[b] = mv.get(m)
            ci = self.gain_ci95.get(m)
            row["gain 95% CI"] = f"[{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else ""
            rows.append(row)
        return rows

    def columns(self) -> list[str]:
        return ["metric", "model", *self.baselines, "gain 95% CI"]


def _round(d: Mapping[str, float]) -> dict[str, float | None]:
    return {k: (round(float(v), 4) if v is not None and np.isfinite(v) else None) for k, v in d.items()}


def compare(task: str, y: np.ndarray, model: np.ndarray, baselines: Mapping[str, np.ndarray],
            metrics: Mapping[str, M.Metric], primary: str, split: dict[str, Any], *,
            scale_free_baselines: frozenset[str] = frozenset(), n_boot: int = 1000, seed: int = 0) -> Evaluation:
    """Score the model and baselines with `metrics`; bootstrap the gain over the best baseline by `primary`.

    Baselines named in `scale_free_baselines` are rankings, not probabilities/values on the target's scale
    (e.g. "days since last order"): scale-dependent metrics (Brier, log loss, MAE, …) are not reported for them.
    """
    y = np.asarray(y, float)
    model = np.asarray(model, float)
    ev = Evaluation(task=task, split=split, model=M.compute(metrics, y, model), primary=primary)
    for name, s in baselines.items():
        skip = M.SCALE_DEPENDENT if name in scale_free_baselines else frozenset()
        ev.baselines[name] = M.compute(metrics, y, np.asarray(s, float), skip)
    if not baselines:
        return ev
    sign = -1 if primary in M.LOWER_IS_BETTER else 1
    best = max(ev.baselines, key=lambda b: sign * ev.baselines[b].get(primary, float("-inf")))
    ev.best_baseline = best
    for name, fn in metrics.items():
        if name not in ev.baselines[best]:
            continue
        ev.gain_ci95[name] = list(M.paired_bootstrap_ci(fn, y, model, np.asarray(baselines[best], float),
                                                        n_boot=n_boot, seed=seed,
                                                        lower_is_better=name in M.LOWER_IS_BETTER))
    return ev


def machine_info() -> dict[str, Any]:
    """The `machine` block of DESIGN §10 (cpus, memory, python, commit, date)."""
    import datetime as dt
    import os
    import platform

    import psutil

    from training.tracking import git_commit

    commit = git_commit()
    return {"cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30),
            "python": platform.python_version(), "commit": commit[:7] if commit else None,
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


def write_results(path: Path, dataset: str, ev: Evaluation) -> Path:
    """Write (or merge into) a DESIGN §10 results file: datasets[dataset][ev.task] = ev.to_result()."""
    import json

    from features.store import atomic_write_json

    path = Path(path)
    doc: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    datasets = doc.get("datasets", {})
    datasets.setdefault(dataset, {})[ev.task] = ev.to_result()
    out = {"machine": machine_info(), "datasets": datasets, "figures": doc.get("figures", {}),
           "units": doc.get("units", {})}
    atomic_write_json(path, out)
    return path
