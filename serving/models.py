"""Champion models, each loaded once when a worker starts: pinned from BentoML's store, else from the MLflow registry.

Two sources, per model:
1. **Pinned** (`member-ml serve import`, serving/import_models.py): the lock file names a BentoML tag imported from
   one registry version; when that tag is in BentoML's model store (the local one, or the Bento's own after
   `bentoml build`) the model is loaded from there with `bentoml.mlflow.load_model`. No registry is needed at run
   time, and the version served is exactly the one recorded.
2. **Registry** (no lock, or the tag is missing from the store): `models:/<name>@champion` is resolved to a version
   and loaded with `mlflow.pyfunc.load_model` (needs MLFLOW_TRACKING_URI at run time). A promotion or rollback then
   takes effect on the next restart.

Either way the model is kept as the unwrapped PythonModel: serving validates input once at its edge
(serving/schemas.py) and calls `python_model.predict(None, frame)` directly, without MLflow's per-call schema
enforcement. The version (and where it came from) is logged at start-up and returned with every answer.

A model that cannot be resolved or loaded is recorded with the reason; the service still starts (rules-only
endpoints work, /score says which model is unavailable) but /readyz stays 503 until every model is loaded.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

log = logging.getLogger("member_ml.serving.models")


@dataclass(frozen=True)
class LoadedModel:
    """One champion model: its registry coordinates and the PythonModel to call."""

    name: str
    version: str
    run_id: str | None
    python_model: Any
    source: str = "registry"  # "registry" or the BentoML tag it was loaded from

    @property
    def module(self) -> ModuleType | None:
        """The module the PythonModel's class lives in (shipped with the model: helpers such as
        `summarise_history` come from here, never from the training package)."""
        return sys.modules.get(type(self.python_model).__module__)


@dataclass
class ModelSet:
    loaded: dict[str, LoadedModel] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> LoadedModel | None:
        return self.loaded.get(name)

    @property
    def versions(self) -> dict[str, str]:
        return {n: m.version for n, m in self.loaded.items()}

    @property
    def sources(self) -> dict[str, str]:
        """Where each loaded model came from: "registry" or the BentoML tag."""
        return {n: m.source for n, m in self.loaded.items()}

    @property
    def all_loaded(self) -> bool:
        return not self.unavailable


def resolve_champion(client: Any, name: str, alias: str) -> Any:
    """The ModelVersion the alias points at; LookupError naming the model and alias when there is none."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as e:
        raise LookupError(f"registered model {name!r} has no {alias!r} alias (train and promote it: "
                          f"`member-ml models promote {name}`)") from e


def _load_pinned(pin: Any) -> LoadedModel:
    """Load a pinned model from BentoML's model store (NotFound when its tag is not there)."""
    import bentoml

    stored = bentoml.models.get(pin.tag)
    labels = stored.info.labels
    if labels.get("registered_name", pin.name) != pin.name or str(labels.get("version", pin.version)) != pin.version:
        raise ValueError(f"BentoML model {pin.tag} holds {labels.get('registered_name')} version "
                         f"{labels.get('version')}, but the lock pins {pin.name} version {pin.version}")
    loaded = bentoml.mlflow.load_model(stored)
    return LoadedModel(pin.name, pin.version, pin.run_id, loaded.unwrap_python_model(), source=str(stored.tag))


def load_models(names: list[str], alias: str = "champion", tracking_uri: str | None = None,
                pinned: dict[str, Any] | None = None) -> ModelSet:
    """Load every named model once: from BentoML's store when `pinned` (serving/import_models.read_lock) names it
    and the tag is there, else from the registry alias. Failures are kept as reasons, never raised."""
    out = ModelSet()
    rest = []
    for name in names:
        pin = (pinned or {}).get(name)
        if pin is None:
            rest.append(name)
            continue
        try:
            out.loaded[name] = _load_pinned(pin)
            log.info("model %s: version %s loaded from BentoML model %s (pinned)", name, pin.version, pin.tag)
        except Exception as e:  # noqa: BLE001 - tag missing or broken: the registry is the fallback
            log.warning("model %s: pinned %s not usable (%s: %s); resolving %s in the registry instead",
                        name, pin.tag, type(e).__name__, e, alias)
            rest.append(name)
    if not rest:
        return out
    import mlflow
    from mlflow import MlflowClient

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient()
    for name in rest:
        try:
            mv = resolve_champion(client, name, alias)
            loaded = mlflow.pyfunc.load_model(f"models:/{name}/{mv.version}")
            out.loaded[name] = LoadedModel(name, str(mv.version), mv.run_id, loaded.unwrap_python_model())
            log.info("model %s: %s → version %s (run %s) loaded from the registry", name, alias, mv.version,
                     mv.run_id)
        except LookupError as e:
            out.unavailable[name] = str(e)
            log.warning("model %s unavailable: %s", name, e)
        except Exception as e:  # a broken artifact must not stop the rules-only endpoints from serving
            out.unavailable[name] = f"{alias} of {name!r} could not be loaded: {type(e).__name__}: {e}"
            log.exception("model %s could not be loaded", name)
    return out
