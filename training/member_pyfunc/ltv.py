"""The LTV model as served: expected paid spend over the horizon, never negative.

kind "tweedie": one LightGBM booster with a Tweedie objective (log link: predictions are already ≥ 0).
kind "two_part": P(buy) from a binary booster × expected spend given a purchase from a Gamma booster.

Seed bagging: each role ("value"; or "buy" and "spend") may hold several boosters fitted with different seeds, stored
as parts "<role>", "<role>_b1", "<role>_b2", …; a role's prediction is the mean of its boosters' predictions.

Diversity (kind "tweedie" only): an optional role "extra" holds Tweedie boosters grown with extremely randomised
splits (LightGBM `extra_trees`); with `extra_weight` w > 0 the value is value^(1−w) · extra^w (a blend of the two
log predictions: still in currency, still ≥ 0). Models saved without it (no "extra" parts, w = 0) are unchanged.
"""
from __future__ import annotations

import json
from pathlib import Path

import lightgbm as lgb
import mlflow.pyfunc
import numpy as np
import pandas as pd

from .bgnbd import BgNbd, input_columns
from .matrix import MEMBER_ID, FeatureSpec, member_ids, threads_for

OUTPUT_COLUMNS = [MEMBER_ID, "ltv"]
KINDS = ("tweedie", "two_part")
ROLES = {"tweedie": ("value",), "two_part": ("buy", "spend")}
EXTRA_ROLE = "extra"  # optional extra-trees Tweedie boosters blended with "value" (kind tweedie)


def part_name(role: str, bag: int) -> str:
    """The boosters-dict key of seed bag `bag` (0-based) of `role`: "value", "value_b1", …"""
    return role if bag == 0 else f"{role}_b{bag}"


def part_role(part: str) -> str:
    """The role a boosters-dict key belongs to ("value_b2" → "value")."""
    return part.partition("_b")[0]


class LtvModel(mlflow.pyfunc.PythonModel):
    """pyfunc: feature frame → member_id, ltv (expected paid spend in the horizon, ≥ 0).

    With `derived` (fitted BG/NBD parameters) the model adds the BG/NBD columns to the frame itself before scoring.
    """

    _skip_type_hint_validation = True  # predict is called directly (serving validates at its edge): no wrapper

    def __init__(self, kind: str = "tweedie", boosters: dict[str, lgb.Booster] | None = None,
                 spec: FeatureSpec | None = None, horizon_days: int | None = None,
                 derived: BgNbd | None = None, extra_weight: float = 0.0) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown LTV model kind {kind!r}; expected one of {KINDS}")
        self.kind = kind
        self.boosters = boosters or {}
        self.spec = spec
        self.horizon_days = horizon_days
        self.derived = derived
        self.extra_weight = float(extra_weight)
        self.threads = 1  # LightGBM threads for big batches (0 = all cores)
        has_extra = any(part_role(p) == EXTRA_ROLE for p in self.boosters)
        if not 0.0 <= self.extra_weight < 1.0:
            raise ValueError(f"LTV extra_weight must be in [0, 1), got {extra_weight}")
        if self.extra_weight > 0 and (kind != "tweedie" or (self.boosters and not has_extra)):
            raise ValueError("LTV extra_weight > 0 needs kind 'tweedie' and boosters for the 'extra' role")
        missing = [r for r in ROLES[kind] if self.boosters and not any(part_role(p) == r for p in self.boosters)]
        if missing:
            raise ValueError(f"LTV model kind {kind!r} needs booster(s) for {missing}, "
                             f"got parts {sorted(self.boosters)}")

    def save_artifacts(self, folder: Path) -> dict[str, str]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arts = {}
        for part, booster in self.boosters.items():
            p = folder / f"booster_{part}.txt"
            booster.save_model(str(p))
            arts[f"booster_{part}"] = str(p)
        arts["spec"] = str(self.spec.save(folder / "spec.json"))
        meta = folder / "ltv.json"
        meta.write_text(json.dumps({"kind": self.kind, "horizon_days": self.horizon_days,
                                    "parts": sorted(self.boosters), "extra_weight": self.extra_weight}),
                        encoding="utf-8")
        arts["meta"] = str(meta)
        if self.derived is not None:
            arts["bgnbd"] = str(self.derived.save(folder / "bgnbd.json"))
        return arts

    def load_context(self, context) -> None:  # noqa: ANN001
        a = context.artifacts
        meta = json.loads(Path(a["meta"]).read_text(encoding="utf-8"))
        self.kind = meta["kind"]
        self.horizon_days = meta.get("horizon_days")
        self.boosters = {p: lgb.Booster(model_file=a[f"booster_{p}"]) for p in meta["parts"]}
        self.spec = FeatureSpec.load(a["spec"])
        self.derived = BgNbd.load(a["bgnbd"]) if "bgnbd" in a else None
        self.extra_weight = float(meta.get("extra_weight", 0.0))

    @property
    def input_columns(self) -> list[str]:
        """The feature columns a caller must pass (the spec's, minus derived ones, plus what they are made from)."""
        return input_columns(self.spec.columns, self.derived)

    def _matrix(self, frame: pd.DataFrame) -> np.ndarray:
        derived = getattr(self, "derived", None)
        return self.spec.matrix(derived.augment(frame) if derived is not None else frame)

    def predict_value(self, frame: pd.DataFrame) -> np.ndarray:
        """Expected spend per row (≥ 0)."""
        return self._value(self._matrix(frame))

    def _role(self, role: str, x: np.ndarray, threads: int) -> np.ndarray:
        """Mean prediction of the role's seed-bagged boosters."""
        bag = [b for p, b in sorted(self.boosters.items()) if part_role(p) == role]
        return np.mean([b.predict(x, num_threads=threads) for b in bag], axis=0)

    def _value(self, x: np.ndarray) -> np.ndarray:
        t = threads_for(len(x), getattr(self, "threads", 1))
        if self.kind == "tweedie":
            v = self._role("value", x, t)
            w = getattr(self, "extra_weight", 0.0)
            if w > 0:
                v = np.clip(v, 0.0, None) ** (1.0 - w) * np.clip(self._role(EXTRA_ROLE, x, t), 0.0, None) ** w
        else:
            v = self._role("buy", x, t) * self._role("spend", x, t)
        return np.clip(np.nan_to_num(v, nan=0.0, posinf=0.0), 0.0, None)

    def predict(self, context, model_input, params=None):  # noqa: ANN001 (no type hints: skip mlflow's wrapping)
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return pd.DataFrame({MEMBER_ID: member_ids(frame), "ltv": self._value(self._matrix(frame))})
