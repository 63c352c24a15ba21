"""Which trainer module serves each model name: the one place a new model type plugs into the CLI.

A trainer module exposes:
- `SPEC: training.registry.ModelSpec` (registered name, primary metric, scorer for the promotion gate);
- `train(store, *, settings, cutoff=None, horizon=None, config=None, promote=True, progress=None) -> TrainOutcome`
  (fits on stacked cutoffs, backtests, logs an MLflow run, registers a version, runs the gate);
- `evaluate(store, *, cutoff, horizon, config=None, baselines=True, progress=None) -> Evaluation`
  (trains on cutoffs before `cutoff`, tests at `cutoff`, compares with baselines; logs nothing).
`config` is a YAML path or None (each trainer has its own pydantic config model).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

TRAINERS: dict[str, str] = {
    "churn": "training.churn",
    "ltv": "training.ltv",
    "timing": "training.timing.trainer",
    "recs": "training.recs.train",
}


class UnknownModel(KeyError):
    pass


def names() -> list[str]:
    return list(TRAINERS)


def load(name: str) -> ModuleType:
    """Import the trainer module of model `name` (clear error listing the known names)."""
    if name not in TRAINERS:
        raise UnknownModel(f"unknown model {name!r}; known models: {', '.join(TRAINERS)}")
    return importlib.import_module(TRAINERS[name])


@dataclass
class TrainOutcome:
    """What `train` did: the run, the registered version, its backtest metrics and the gate's decision."""

    model: str
    run_id: str
    version: str | None
    metrics: dict[str, float]
    promotion: Any = None  # training.registry.PromotionResult
    notes: list[str] = field(default_factory=list)
