"""The churn model as served: LightGBM margin → calibrated probability, plus the top reasons in plain words."""
from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import mlflow.pyfunc
import numpy as np
import pandas as pd

from .calibration import Calibrator
from .matrix import MEMBER_ID, FeatureSpec, member_ids, threads_for
from .reasons import templates_for, top_reasons

N_REASONS = 3
OUTPUT_COLUMNS = [MEMBER_ID, "churn_probability"] + [f"reason_{i}" for i in range(1, N_REASONS + 1)]


class ChurnModel(mlflow.pyfunc.PythonModel):
    """pyfunc: feature frame → member_id, churn_probability, reason_1..3 (params={'reasons': False} skips them)."""

    _skip_type_hint_validation = True  # predict is called directly (serving validates at its edge): no wrapper

    def __init__(self, booster: lgb.Booster | None = None, spec: FeatureSpec | None = None,
                 calibrator: Calibrator | None = None) -> None:
        self.booster = booster
        self.spec = spec
        self.calibrator = calibrator or Calibrator()
        self._templates = templates_for(spec.columns) if spec is not None else None
        self.threads = 1  # LightGBM threads for big batches (0 = all cores; OpenMP stalls on a busy shared machine)

    # -- persistence (artifacts are plain files: LightGBM text model + JSON) --
    def save_artifacts(self, folder: Path) -> dict[str, str]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(folder / "booster.txt"))
        self.spec.save(folder / "spec.json")
        self.calibrator.save(folder / "calibrator.json")
        return {"booster": str(folder / "booster.txt"), "spec": str(folder / "spec.json"),
                "calibrator": str(folder / "calibrator.json")}

    def load_context(self, context) -> None:  # noqa: ANN001 (mlflow PythonModelContext)
        a = context.artifacts
        self.booster = lgb.Booster(model_file=a["booster"])
        self.spec = FeatureSpec.load(a["spec"])
        self.calibrator = Calibrator.load(a["calibrator"])
        self._templates = templates_for(self.spec.columns)
        self.threads = 1

    # -- scoring --
    def margin(self, frame: pd.DataFrame) -> np.ndarray:
        return self.booster.predict(self.spec.matrix(frame), raw_score=True,
                                    num_threads=threads_for(len(frame), self.threads))

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Calibrated churn probability per row."""
        return self.calibrator(self.margin(frame))

    def predict(self, context, model_input, params=None):  # noqa: ANN001 (no type hints: skip mlflow's wrapping)
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        x = self.spec.matrix(frame)
        threads = threads_for(len(frame), self.threads)
        margin = self.booster.predict(x, raw_score=True, num_threads=threads)
        cols = {MEMBER_ID: member_ids(frame), "churn_probability": self.calibrator(margin)}
        if params is None or params.get("reasons", True):
            contrib = self.booster.predict(x, pred_contrib=True, num_threads=threads)
            reasons = top_reasons(contrib, frame, self.spec.columns, N_REASONS, self._templates, x)
        else:
            reasons = [np.full(len(frame), "", dtype=object) for _ in range(N_REASONS)]
        for i, r in enumerate(reasons, start=1):
            cols[f"reason_{i}"] = r
        return pd.DataFrame(cols)
