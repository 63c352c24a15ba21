"""Applying a fitted probability calibration (Platt or isotonic) with numpy only; fitting lives in training."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Calibrator:
    """Maps a booster's raw margin to a calibrated probability.

    kind "platt": p = sigmoid(a * margin + b) (keeps the ranking, so AUC is unchanged);
    kind "isotonic": p = interp(sigmoid(margin), x, y) over the fitted isotonic steps;
    kind "identity": p = sigmoid(margin).
    """

    kind: str = "identity"
    a: float = 1.0
    b: float = 0.0
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)

    def __call__(self, margin: np.ndarray) -> np.ndarray:
        margin = np.asarray(margin, dtype=np.float64)
        if self.kind == "platt":
            return _sigmoid(self.a * margin + self.b)
        if self.kind == "isotonic":
            return np.interp(_sigmoid(margin), np.asarray(self.x), np.asarray(self.y))
        if self.kind == "identity":
            return _sigmoid(margin)
        raise ValueError(f"unknown calibration kind {self.kind!r}; expected platt, isotonic or identity")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "a": self.a, "b": self.b, "x": self.x, "y": self.y}

    def save(self, path: Path) -> Path:
        Path(path).write_text(json.dumps(self.to_dict()), encoding="utf-8")
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "Calibrator":
        d = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(kind=d["kind"], a=float(d["a"]), b=float(d["b"]), x=list(d["x"]), y=list(d["y"]))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))
