"""Champion models from the MLflow registry, each loaded once when a worker starts.

Each configured name (churn, ltv, timing, recs) is resolved through its `champion` alias to a version
(`models:/<name>@champion` → version N), loaded with `mlflow.pyfunc.load_model`, and kept as the unwrapped
PythonModel: serving validates input once at its edge (serving/schemas.py) and calls
`python_model.predict(None, frame)` directly, without MLflow's per-call schema enforcement.

Why load from MLflow directly rather than `bentoml.mlflow.import_model` into BentoML's store: the registry is the
one source of truth. Resolving the alias at start-up makes a promotion or a rollback (`member-ml models promote /
rollback`) take effect on the next restart with no second copy to keep in step; the version that was resolved is
logged at start-up and returned with every answer (`model_versions`). The price: a Bento built with `bentoml build`
needs MLFLOW_TRACKING_URI (and the artifact store) at run time instead of carrying the models inside.

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


def load_models(names: list[str], alias: str = "champion", tracking_uri: str | None = None) -> ModelSet:
    """Resolve and load every named model once; failures are kept as reasons, never raised."""
    import mlflow
    from mlflow import MlflowClient

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient()
    out = ModelSet()
    for name in names:
        try:
            mv = resolve_champion(client, name, alias)
            loaded = mlflow.pyfunc.load_model(f"models:/{name}/{mv.version}")
            out.loaded[name] = LoadedModel(name, str(mv.version), mv.run_id, loaded.unwrap_python_model())
            log.info("model %s: %s → version %s (run %s) loaded", name, alias, mv.version, mv.run_id)
        except LookupError as e:
            out.unavailable[name] = str(e)
            log.warning("model %s unavailable: %s", name, e)
        except Exception as e:  # a broken artifact must not stop the rules-only endpoints from serving
            out.unavailable[name] = f"{alias} of {name!r} could not be loaded: {type(e).__name__}: {e}"
            log.exception("model %s could not be loaded", name)
    return out
