"""MLflow tracking set-up and small single-purpose logging helpers shared by every trainer.

Nothing here runs at import time: call `configure(settings)` from the entry point (CLI, notebook, benchmark).
One experiment per model (`experiment_name(model)`), artifacts next to the SQLite store when the store is SQLite.
"""
from __future__ import annotations

import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from member_ml.settings import Settings

EXPERIMENT_PREFIX = "member-ml"
FEATURE_VERSION_TAG = "feature_version"


def configure(settings: Settings | None = None) -> str:
    """Point MLflow at the settings' tracking URI (MLFLOW_TRACKING_URI wins) and return it."""
    import mlflow

    settings = settings or Settings()
    uri = settings.resolved_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def experiment_name(model: str) -> str:
    return f"{EXPERIMENT_PREFIX}/{model}"


def artifact_location(uri: str, model: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a SQLite database (never the current directory)."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        return (db.parent / "artifacts" / model).resolve().as_uri()  # default: <root>/mlflow/artifacts/<model>
    return None  # a tracking server decides


def ensure_experiment(model: str, settings: Settings | None = None) -> str:
    """Get or create the model's experiment, make it the active one, and return its id (configures MLflow first)."""
    import mlflow

    settings = settings or Settings()
    uri = configure(settings)
    name = experiment_name(model)
    exp = mlflow.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp is not None else mlflow.create_experiment(
        name, artifact_location=artifact_location(uri, model))
    # MLflow 3 files logged models under the *active* experiment, not the run's: without this they land in the
    # Default experiment, whose artifacts live in ./mlruns of whatever directory created the database.
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


@contextmanager
def start_run(model: str, settings: Settings | None = None, run_name: str | None = None,
              tags: Mapping[str, str] | None = None) -> Iterator[Any]:
    """Start a run in the model's experiment (`with start_run("churn", settings) as run: ...`)."""
    import mlflow

    exp_id = ensure_experiment(model, settings)
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=dict(tags or {})) as run:
        yield run


def git_commit(root: Path | None = None) -> str | None:
    """The checkout's HEAD commit (None outside a git checkout)."""
    root = root or Settings().root
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=root, check=False,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _iso(d: Any) -> str:
    return pd.Timestamp(d).strftime("%Y-%m-%d")


def metadata_tags(*, store: Any, cutoffs: Sequence[Any] = (), horizon_days: int | None = None,
                  feature_version: str | None = None, root: Path | None = None,
                  extra: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The lineage tags of a run: store path + fingerprint, cutoffs, horizon, git commit, feature version."""
    tags: dict[str, str] = {
        "store.path": str(Path(store.path).resolve()),
        "store.fingerprint": store.fingerprint(),
    }
    if cutoffs:
        cs = sorted(_iso(c) for c in cutoffs)
        tags["cutoffs"] = ",".join(cs) if len(cs) <= 24 else f"{cs[0]}..{cs[-1]} ({len(cs)} cutoffs)"
        tags["cutoff.first"], tags["cutoff.last"] = cs[0], cs[-1]
    if horizon_days is not None:
        tags["horizon_days"] = str(int(horizon_days))
    commit = git_commit(root)
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["git_commit"] = commit
    if feature_version:
        tags[FEATURE_VERSION_TAG] = feature_version
    for k, v in (extra or {}).items():
        tags[k] = str(v)
    return tags


def log_metadata(**kwargs: Any) -> dict[str, str]:
    """Set the lineage tags (see `metadata_tags`) on the active run and return them."""
    import mlflow

    tags = metadata_tags(**kwargs)
    mlflow.set_tags(tags)
    return tags


def log_training_manifest(manifest: pd.DataFrame, *, name: str, source: str, context: str = "training",
                          targets: str | None = None) -> None:
    """Record the data the model saw as the run's input dataset (schema, profile, digest) and as a CSV artifact."""
    import mlflow

    frame = manifest.copy()
    for c in frame.columns:  # mlflow's schema inference wants plain dtypes
        if isinstance(frame[c].dtype, pd.StringDtype):
            frame[c] = frame[c].astype(object)
    ds = mlflow.data.from_pandas(frame, source=source, name=name, targets=targets)
    mlflow.log_input(ds, context=context)
    if len(frame) <= 10_000:
        mlflow.log_text(frame.to_csv(index=False), f"data/{name}.csv")


def log_figures(figures: Mapping[str, Any], folder: str = "plots") -> list[str]:
    """Log matplotlib figures as PNG artifacts `plots/<name>.png`; returns the artifact paths."""
    import mlflow

    paths = []
    for name, fig in figures.items():
        path = f"{folder}/{name}.png"
        mlflow.log_figure(fig, path)
        paths.append(path)
    return paths


def log_frame(frame: pd.DataFrame, artifact_path: str) -> None:
    """Log a DataFrame as a Parquet artifact (e.g. a backtest set) at `artifact_path` (…/name.parquet)."""
    import tempfile

    import mlflow

    folder, _, fname = artifact_path.rpartition("/")
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / fname
        frame.to_parquet(p, index=False)
        mlflow.log_artifact(str(p), artifact_path=folder or None)
