"""The churn model as served: LightGBM margin → calibrated probability, plus the top reasons in plain words."""
from __future__ import annotations

import json
from pathlib import Path

import lightgbm as lgb
import mlflow.pyfunc
import numpy as np
import pandas as pd

from .bgnbd import BgNbd, input_columns
from .calibration import Calibrator
from .linear import LinearScorer
from .matrix import MEMBER_ID, FeatureSpec, member_ids, threads_for
from .reasons import templates_for, top_reasons

N_REASONS = 3
OUTPUT_COLUMNS = [MEMBER_ID, "churn_probability"] + [f"reason_{i}" for i in range(1, N_REASONS + 1)]


def _horizon(derived: BgNbd | None) -> int | None:
    return derived.horizon_days if derived is not None else None


def stacked_margin(stack: tuple[float, ...], margin: np.ndarray, aux: np.ndarray,
                   linear: np.ndarray | None = None) -> np.ndarray:
    """a·margin + c·aux + b (+ d·linear): the stacked margin the calibrator maps (training fits the calibrator on
    exactly this arithmetic)."""
    z = stack[0] * margin + stack[1] * aux + stack[2]
    return z + stack[3] * linear if linear is not None else z


class ChurnModel(mlflow.pyfunc.PythonModel):
    """pyfunc: feature frame → member_id, churn_probability, reason_1..3 (params={'reasons': False} skips them).

    With `derived` (fitted BG/NBD parameters) the model adds the BG/NBD columns to the frame itself before scoring,
    so callers pass the same feature frame as always (`input_columns`).

    With `aux` (a booster predicting log(1 + days to the next order), censored at the horizon) and `stack` (a, c, b),
    the churn margin is the stacked a·margin + c·aux + b (fitted on held-out validation rows) before calibration;
    reason codes still come from the churn booster's contributions.

    With `linear` (a logistic regression on signed-log standardised features: a different learner on the same rows)
    the stack has a fourth coefficient d and the margin is a·margin + c·aux + b + d·linear. It joins the time-to-next
    stack only (a model without `aux` has no stack). Models saved before it (3-coefficient stack) load unchanged.
    """

    _skip_type_hint_validation = True  # predict is called directly (serving validates at its edge): no wrapper

    def __init__(self, booster: lgb.Booster | None = None, spec: FeatureSpec | None = None,
                 calibrator: Calibrator | None = None, derived: BgNbd | None = None,
                 aux: lgb.Booster | None = None, stack: tuple[float, ...] | None = None,
                 linear: LinearScorer | None = None) -> None:
        if (aux is None) != (stack is None):
            raise ValueError("ChurnModel needs both `aux` and `stack` (stacking coefficients) or neither")
        if stack is not None and len(stack) != (4 if linear is not None else 3):
            raise ValueError(f"ChurnModel stack needs {4 if linear is not None else 3} coefficients "
                             f"(a, c, b{', d' if linear is not None else ''}), got {len(stack)}")
        if linear is not None and aux is None:
            raise ValueError("ChurnModel `linear` joins the time-to-next stack: it needs `aux` and `stack`")
        self.booster = booster
        self.aux = aux
        self.stack = stack
        self.linear = linear
        self.spec = spec
        self.calibrator = calibrator or Calibrator()
        self.derived = derived
        self._templates = templates_for(spec.columns, _horizon(derived)) if spec is not None else None
        self.threads = 1  # LightGBM threads for big batches (0 = all cores; OpenMP stalls on a busy shared machine)

    # -- persistence (artifacts are plain files: LightGBM text model + JSON) --
    def save_artifacts(self, folder: Path) -> dict[str, str]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(folder / "booster.txt"))
        self.spec.save(folder / "spec.json")
        self.calibrator.save(folder / "calibrator.json")
        arts = {"booster": str(folder / "booster.txt"), "spec": str(folder / "spec.json"),
                "calibrator": str(folder / "calibrator.json")}
        if self.derived is not None:
            arts["bgnbd"] = str(self.derived.save(folder / "bgnbd.json"))
        if getattr(self, "aux", None) is not None:
            self.aux.save_model(str(folder / "aux_booster.txt"))
            (folder / "stack.json").write_text(json.dumps(list(self.stack)), encoding="utf-8")
            arts["aux_booster"], arts["stack"] = str(folder / "aux_booster.txt"), str(folder / "stack.json")
        if getattr(self, "linear", None) is not None:
            arts["linear"] = str(self.linear.save(folder / "linear.json"))
        return arts

    def load_context(self, context) -> None:  # noqa: ANN001 (mlflow PythonModelContext)
        a = context.artifacts
        self.booster = lgb.Booster(model_file=a["booster"])
        self.spec = FeatureSpec.load(a["spec"])
        self.calibrator = Calibrator.load(a["calibrator"])
        self.derived = BgNbd.load(a["bgnbd"]) if "bgnbd" in a else None
        self.aux = lgb.Booster(model_file=a["aux_booster"]) if "aux_booster" in a else None
        self.stack = tuple(json.loads(Path(a["stack"]).read_text(encoding="utf-8"))) if "stack" in a else None
        self.linear = LinearScorer.load(a["linear"]) if "linear" in a else None
        self._templates = templates_for(self.spec.columns, _horizon(self.derived))
        self.threads = 1

    # -- scoring --
    @property
    def input_columns(self) -> list[str]:
        """The feature columns a caller must pass (the spec's, minus derived ones, plus what they are made from)."""
        return input_columns(self.spec.columns, self.derived)

    def _prepare(self, frame: pd.DataFrame) -> pd.DataFrame:
        derived = getattr(self, "derived", None)
        return derived.augment(frame) if derived is not None else frame

    def _stacked(self, x: np.ndarray, margin: np.ndarray, threads: int) -> np.ndarray:
        """The churn booster's margin, stacked with the time-to-next booster's prediction (and the linear
        learner's margin) when there is one."""
        if getattr(self, "aux", None) is None:
            return margin
        linear = getattr(self, "linear", None)
        return stacked_margin(self.stack, margin, self.aux.predict(x, num_threads=threads),
                              linear(x) if linear is not None else None)

    def margin(self, frame: pd.DataFrame) -> np.ndarray:
        """The (stacked) margin the calibrator maps to a probability."""
        x = self.spec.matrix(self._prepare(frame))
        threads = threads_for(len(frame), self.threads)
        return self._stacked(x, self.booster.predict(x, raw_score=True, num_threads=threads), threads)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Calibrated churn probability per row."""
        return self.calibrator(self.margin(frame))

    def predict(self, context, model_input, params=None):  # noqa: ANN001 (no type hints: skip mlflow's wrapping)
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        frame = self._prepare(frame)
        x = self.spec.matrix(frame)
        threads = threads_for(len(frame), self.threads)
        margin = self._stacked(x, self.booster.predict(x, raw_score=True, num_threads=threads), threads)
        cols = {MEMBER_ID: member_ids(frame), "churn_probability": self.calibrator(margin)}
        if params is None or params.get("reasons", True):
            contrib = self.booster.predict(x, pred_contrib=True, num_threads=threads)
            reasons = top_reasons(contrib, frame, self.spec.columns, N_REASONS, self._templates, x)
        else:
            reasons = [np.full(len(frame), "", dtype=object) for _ in range(N_REASONS)]
        for i, r in enumerate(reasons, start=1):
            cols[f"reason_{i}"] = r
        return pd.DataFrame(cols)
