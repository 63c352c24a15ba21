"""Record one trained model as an MLflow run and a registered version, then run the promotion gate.

The shared tail of every trainer's `train`: lineage tags, params, metrics (model and baselines), plots, the
training-set manifest as the run's input dataset, the backtest set (for re-scoring at promotion), the self-contained
pyfunc model (registered), the version's gate tags, and `registry.promote`.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.contract import MEMBER_ID
from features.engine import as_timestamp
from features.store import Store
from member_ml.settings import Settings
from training import backtest as bt, registry, tracking
from training.model_logging import log_pyfunc_model
from training.trainers import TrainOutcome


def _flat_metrics(model: Mapping[str, float], baselines: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    out = {k: float(v) for k, v in model.items() if v is not None and pd.notna(v)}
    for b, ms in baselines.items():
        for k, v in ms.items():
            if v is not None and pd.notna(v):
                out[f"baseline.{b}.{k}"] = float(v)
    return out


def record_run(*, spec: registry.ModelSpec, settings: Settings, store: Store, model: Any, entry: str,
               params: Mapping[str, Any], metrics: Mapping[str, float],
               baselines: Mapping[str, Mapping[str, float]], figures: Mapping[str, Any],
               manifest: dict[str, Any], manifest_frame: pd.DataFrame, label: str,
               backtest: Mapping[str, pd.DataFrame], input_example: pd.DataFrame, cutoffs: list[Any],
               horizon_days: int, promote: bool = True, notes: list[str] | None = None) -> TrainOutcome:
    """Log everything about a fitted `model` (a member_pyfunc PythonModel with `save_artifacts`) and register it."""
    import mlflow

    primary = float(spec.scorer(model, backtest))
    with tracking.start_run(spec.name, settings, run_name=f"{spec.name}-{pd.Timestamp(cutoffs[-1]).date()}") as run:
        tracking.log_metadata(store=store, cutoffs=cutoffs, horizon_days=horizon_days,
                              feature_version=manifest.get("feature_version"), root=settings.root,
                              extra={"model": spec.name, "definitions": manifest.get("definitions")})
        mlflow.log_params({k: v for k, v in params.items() if v is not None})
        mlflow.log_metrics(_flat_metrics(metrics, baselines))
        mlflow.log_metric(f"gate.{spec.primary_metric}", primary)
        tracking.log_figures(figures)
        tracking.log_training_manifest(manifest_frame, name=f"{spec.name}-training-set",
                                       source=str(Path(store.path).resolve()), targets=f"{label}_mean")
        mlflow.log_dict(manifest, "data/training_set_manifest.json")
        fingerprint = registry.log_backtest(backtest)
        with tempfile.TemporaryDirectory() as tmp:
            artifacts = model.save_artifacts(Path(tmp) / "artifacts")
            example = input_example.reset_index(drop=True)
            info = log_pyfunc_model(entry=entry, artifacts=artifacts, input_example=example,
                                    output_example=model.predict(None, example),
                                    registered_model_name=spec.name)
        version = str(info.registered_model_version)
        registry.tag_version(spec.name, version, run_id=run.info.run_id, fingerprint=fingerprint,
                             metric=spec.primary_metric, value=primary)
        run_id = run.info.run_id
    result = registry.promote(spec, version) if promote else None
    return TrainOutcome(model=spec.name, run_id=run_id, version=version,
                        metrics={spec.primary_metric: primary, **{k: v for k, v in metrics.items()
                                                                  if k != spec.primary_metric}},
                        promotion=result, notes=list(notes or []))


def train_and_record(store: Store, *, settings: Settings, cutoff: Any, horizon: int | None, config: Any,
                     promote: bool, progress: Any, with_bgnbd: bool, load_config: Callable[..., Any],
                     run_backtest: Callable[..., tuple[Any, Any, Any, dict[str, np.ndarray]]],
                     figures: Callable[[np.ndarray, dict[str, np.ndarray], Any], Mapping[str, Any]],
                     spec: registry.ModelSpec, entry: str, label: str) -> TrainOutcome:
    """The `train` of a member-level trainer (churn, LTV): backtest at `cutoff`, then log, register and gate.

    `cutoff` defaults to the latest month start with a full label window; the trainer supplies its config loader,
    backtest, figure set, registry spec, pyfunc entry point and label column. The input example and the backtest
    set hold the model's input columns (`model.input_columns`: derived columns are computed by the pyfunc itself).
    """
    cfg = load_config(config, horizon_days=horizon)
    t = as_timestamp(cutoff, "cutoff") if cutoff is not None else bt.default_cutoff(store, cfg.horizon_days)
    ev, model, data, scores = run_backtest(store, cutoff=t, cfg=cfg, with_bgnbd=with_bgnbd, progress=progress)
    y = data.test[label].to_numpy(float)
    cols = [MEMBER_ID, *model.input_columns]
    return record_run(
        spec=spec, settings=settings, store=store, model=model, entry=entry,
        params={**cfg.model_dump(), **ev.extra["fit"], "test_cutoff": t.date().isoformat()},
        metrics=ev.model, baselines=ev.baselines, figures=figures(y, scores, model),
        manifest=data.manifest, manifest_frame=data.manifest_frame(label), label=label,
        backtest={"test": data.test[[*cols, label]]}, input_example=data.test[cols].head(5),
        cutoffs=_fitted_cutoffs(data, t), horizon_days=cfg.horizon_days, promote=promote,
        notes=ev.notes)


def _fitted_cutoffs(data: Any, test_cutoff: pd.Timestamp) -> list[pd.Timestamp]:
    """Every cutoff the run's rows come from (training, refit-only, validation) and the test cutoff, in order."""
    extra = [] if data.between is None else list(pd.to_datetime(data.between["cutoff"]).unique())
    return sorted({*data.split.train, *extra, data.split.validation}) + [test_cutoff]
