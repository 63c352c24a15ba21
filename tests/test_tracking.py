"""MLflow set-up: runs and logged models stay inside the configured store, never in the current directory."""
from __future__ import annotations

from pathlib import Path

import mlflow

from member_ml.settings import Settings
from training import tracking


class _Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):  # noqa: ARG002 - pyfunc signature
        return model_input


def test_logged_model_artifacts_live_beside_the_store(tracking_uri: str, tmp_path: Path) -> None:
    with tracking.start_run("churn", Settings()) as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=_Echo())
    store_dir = Path(tracking_uri.removeprefix("sqlite:///")).parent.resolve()
    run_loc = mlflow.get_experiment(run.info.experiment_id).artifact_location
    model_loc = mlflow.get_logged_model(info.model_id).artifact_location
    assert mlflow.get_logged_model(info.model_id).experiment_id == run.info.experiment_id
    for loc in (run_loc, model_loc):
        assert Path(loc.removeprefix("file://")).resolve().is_relative_to(store_dir), loc
