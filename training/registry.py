"""Model registry: one version per run, a gated `champion` alias, and rollback.

Each model type plugs in a `ModelSpec`: its registered name, primary metric (and direction) and a *scorer*
(loaded PythonModel, backtest set) → metric value. A backtest set is a dict of named DataFrames logged as Parquet
under the run's `backtest/` artifacts; its content fingerprint and the version's primary metric are stored as
model-version tags. `promote` compares a challenger with the champion on the challenger's backtest set: directly
when both were evaluated on the same data (same fingerprint), otherwise by re-scoring the champion's pyfunc on the
challenger's backtest. The alias history lives in model-version tags (`champion.previous`), so `rollback` can
restore the previous champion.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

ALIAS = "champion"
BACKTEST_DIR = "backtest"
TAG_FINGERPRINT = "backtest.fingerprint"
TAG_METRIC = "primary_metric"
TAG_VALUE = "primary_metric.value"
TAG_PREVIOUS = "champion.previous"
TAG_PROMOTED_AT = "champion.promoted_at"
TAG_ROLLED_BACK_AT = "champion.rolled_back_at"
TAG_RUN = "run_id"

Scorer = Callable[[Any, Mapping[str, pd.DataFrame]], float]


class RegistryError(RuntimeError):
    """A registry action cannot be carried out (unknown model, no champion, no previous champion…)."""


@dataclass(frozen=True)
class ModelSpec:
    """What the registry needs to know about a model type to gate promotions."""

    name: str
    primary_metric: str
    scorer: Scorer
    greater_is_better: bool = True

    def better(self, challenger: float, champion: float) -> bool:
        return challenger > champion if self.greater_is_better else challenger < champion


@dataclass
class PromotionResult:
    model: str
    version: str
    promoted: bool
    reason: str
    challenger: float | None = None
    champion: float | None = None
    champion_version: str | None = None


def backtest_fingerprint(backtest: Mapping[str, pd.DataFrame]) -> str:
    """A content hash of the backtest frames (names, columns and values): equal data ⇒ equal fingerprint.

    Floats are rounded to 6 decimals first: a parallel engine may sum in a different order from run to run, and
    last-bit differences must not make the same data look new (the gate would then re-score instead of compare).
    """
    h = hashlib.sha256()
    for name in sorted(backtest):
        df = backtest[name]
        floats = [c for c in df.columns if pd.api.types.is_float_dtype(df[c])]
        if floats:
            df = df.assign(**{c: df[c].round(6) for c in floats})
        h.update(name.encode())
        h.update(",".join(map(str, df.columns)).encode())
        h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()[:20]


def log_backtest(backtest: Mapping[str, pd.DataFrame]) -> str:
    """Log the backtest frames under the active run's `backtest/` artifacts; return their fingerprint."""
    from training.tracking import log_frame

    for name, df in backtest.items():
        log_frame(df, f"{BACKTEST_DIR}/{name}.parquet")
    return backtest_fingerprint(backtest)


def load_backtest(run_id: str) -> dict[str, pd.DataFrame]:
    """Download a run's backtest frames."""
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=BACKTEST_DIR))
    return {p.stem: pd.read_parquet(p) for p in sorted(local.glob("*.parquet"))}


def _client() -> Any:
    from mlflow import MlflowClient

    return MlflowClient()


def tag_version(model: str, version: str | int, *, run_id: str, fingerprint: str, metric: str, value: float) -> None:
    """Store the backtest fingerprint and primary metric with a model version (what `promote` compares)."""
    c = _client()
    for k, v in {TAG_RUN: run_id, TAG_FINGERPRINT: fingerprint, TAG_METRIC: metric, TAG_VALUE: repr(float(value))}.items():
        c.set_model_version_tag(model, str(version), k, v)


def champion_version(model: str) -> Any | None:
    """The ModelVersion holding the champion alias, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return _client().get_model_version_by_alias(model, ALIAS)
    except MlflowException:
        return None


def _latest_version(model: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        versions = _client().search_model_versions(f"name='{model}'")
    except MlflowException as e:
        raise RegistryError(f"model {model!r} is not registered: {e}") from e
    if not versions:
        raise RegistryError(f"model {model!r} has no registered versions (train it first: member-ml train {model})")
    return max(versions, key=lambda v: int(v.version))


def _get_version(model: str, version: str | int) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return _client().get_model_version(model, str(version))
    except MlflowException as e:
        raise RegistryError(f"model {model!r} has no version {version}") from e


def _set_champion(model: str, version: str, previous: str | None) -> None:
    c = _client()
    if previous is not None:
        c.set_model_version_tag(model, version, TAG_PREVIOUS, previous)
    c.set_model_version_tag(model, version, TAG_PROMOTED_AT, dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    c.set_registered_model_alias(model, ALIAS, version)


def _stored_value(v: Any) -> float | None:
    raw = (v.tags or {}).get(TAG_VALUE)
    return float(raw) if raw is not None else None


def score_version(spec: ModelSpec, version: str, backtest: Mapping[str, pd.DataFrame]) -> float:
    """Load a registered version's pyfunc and score it with the spec's scorer on `backtest`."""
    import mlflow

    loaded = mlflow.pyfunc.load_model(f"models:/{spec.name}/{version}")
    return float(spec.scorer(loaded.unwrap_python_model(), backtest))


def promote(spec: ModelSpec, version: str | int | None = None, *, force: bool = False) -> PromotionResult:
    """Make `version` (default: the latest) champion if it beats the current champion on the same backtest."""
    model = spec.name
    cand = _get_version(model, version) if version is not None else _latest_version(model)
    v = str(cand.version)
    tags = cand.tags or {}
    value = _stored_value(cand)
    if value is None or TAG_FINGERPRINT not in tags:
        raise RegistryError(f"{model} v{v} has no stored backtest metric (tags {TAG_VALUE}, {TAG_FINGERPRINT}); "
                            "it was not registered by a member-ml trainer")
    if tags.get(TAG_METRIC) not in (None, spec.primary_metric):
        raise RegistryError(f"{model} v{v} was scored by {tags.get(TAG_METRIC)!r}, the gate uses {spec.primary_metric!r}")
    champ = champion_version(model)
    if champ is None:
        _set_champion(model, v, None)
        return PromotionResult(model, v, True, f"no champion yet: v{v} ({spec.primary_metric} {value:.4f}) is champion",
                               challenger=value)
    cv = str(champ.version)
    if cv == v:
        return PromotionResult(model, v, False, f"v{v} is already the champion", value, value, cv)
    if force:
        _set_champion(model, v, cv)
        return PromotionResult(model, v, True, f"forced: v{v} replaces v{cv} without comparison", value, None, cv)
    if (champ.tags or {}).get(TAG_FINGERPRINT) == tags[TAG_FINGERPRINT] and _stored_value(champ) is not None:
        champ_value = _stored_value(champ)
        how = "same backtest data"
    else:
        try:
            champ_value = score_version(spec, cv, load_backtest(tags[TAG_RUN]))
        except Exception as e:  # the champion cannot score the new data (e.g. features changed): say so, keep it
            return PromotionResult(model, v, False, f"champion v{cv} could not be re-scored on v{v}'s backtest "
                                   f"({type(e).__name__}: {e}); use --force to promote anyway", value, None, cv)
        how = f"champion v{cv} re-scored on v{v}'s backtest"
    m = spec.primary_metric
    if spec.better(value, champ_value):
        _set_champion(model, v, cv)
        return PromotionResult(model, v, True, f"v{v} {m} {value:.4f} beats champion v{cv} {champ_value:.4f} ({how})",
                               value, champ_value, cv)
    return PromotionResult(model, v, False, f"v{v} {m} {value:.4f} does not beat champion v{cv} {champ_value:.4f} "
                           f"({how}); champion unchanged", value, champ_value, cv)


def rollback(model: str) -> PromotionResult:
    """Restore the champion before the current one (from the current champion's `champion.previous` tag)."""
    champ = champion_version(model)
    if champ is None:
        raise RegistryError(f"model {model!r} has no champion to roll back")
    cv = str(champ.version)
    prev = (champ.tags or {}).get(TAG_PREVIOUS)
    if not prev:
        raise RegistryError(f"{model} champion v{cv} has no previous champion to restore")
    _get_version(model, prev)
    c = _client()
    c.set_model_version_tag(model, cv, TAG_ROLLED_BACK_AT, dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    c.set_registered_model_alias(model, ALIAS, prev)
    return PromotionResult(model, prev, True, f"rolled back: champion v{cv} → v{prev}", champion_version=cv)


def list_models() -> list[dict[str, Any]]:
    """One row per registered model: versions, latest, champion and its primary metric."""
    c = _client()
    rows = []
    for rm in c.search_registered_models():
        versions = c.search_model_versions(f"name='{rm.name}'")
        champ = (rm.aliases or {}).get(ALIAS)
        champ = str(champ) if champ is not None else None
        champ_v = next((v for v in versions if str(v.version) == str(champ)), None)
        metric = (champ_v.tags or {}).get(TAG_METRIC) if champ_v else None
        rows.append({
            "model": rm.name,
            "versions": len(versions),
            "latest": max((int(v.version) for v in versions), default=None),
            "champion": champ,
            "metric": metric,
            "champion_value": _stored_value(champ_v) if champ_v else None,
        })
    return sorted(rows, key=lambda r: r["model"])
