"""Feature frame → float64 matrix in a fixed column order (what LightGBM predicts from, fast, no pandas per call)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

MEMBER_ID = "member_id"  # mirrors features.contract.MEMBER_ID (this package must not import features at load time)
SMALL = 256  # up to this many rows, `matrix` takes the low-overhead path used by online scoring
MAX_LEVELS = 64  # a categorical feature keeps at most this many levels; rarer ones become missing


@dataclass
class FeatureSpec:
    """The model's input columns, in order, and the levels of its categorical columns (codes = level index)."""

    columns: list[str]
    categories: dict[str, list[str]] = field(default_factory=dict)
    _lookup: dict[str, dict[str, float]] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, exclude: set[str] | frozenset[str] = frozenset()) -> "FeatureSpec":
        """Infer the spec from a training frame: numeric and bool columns as numbers, text columns as categories.

        Datetime columns and `exclude` (ids, labels, cutoffs) are left out.
        """
        columns: list[str] = []
        categories: dict[str, list[str]] = {}
        for name in frame.columns:
            if name in exclude or name == MEMBER_ID:
                continue
            s = frame[name]
            if pd.api.types.is_datetime64_any_dtype(s) or pd.api.types.is_timedelta64_dtype(s):
                continue
            if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
                columns.append(name)
            else:
                counts = s.dropna().astype(str).value_counts()
                levels = sorted(counts.index[:MAX_LEVELS].tolist())
                columns.append(name)
                categories[name] = levels
        return cls(columns=columns, categories=categories)

    @property
    def categorical_indices(self) -> list[int]:
        return [i for i, c in enumerate(self.columns) if c in self.categories]

    def missing(self, frame: pd.DataFrame) -> list[str]:
        return [c for c in self.columns if c not in frame.columns]

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """Return a float64 (rows × columns) array; unknown category levels and nulls become NaN."""
        missing = self.missing(frame)
        if missing:
            raise ValueError(f"feature frame lacks column(s) {missing} that the model was trained on")
        if len(frame) <= SMALL:
            return self._matrix_small(frame)
        out = np.empty((len(frame), len(self.columns)), dtype=np.float64)
        numeric = [c for c in self.columns if c not in self.categories]
        if numeric:
            idx = [self.columns.index(c) for c in numeric]
            out[:, idx] = frame[numeric].to_numpy(dtype=np.float64, na_value=np.nan)
        for name, levels in self.categories.items():
            codes = pd.Categorical(frame[name].astype("string"), categories=levels).codes.astype(np.float64)
            codes[codes < 0] = np.nan
            out[:, self.columns.index(name)] = codes
        return out

    def _matrix_small(self, frame: pd.DataFrame) -> np.ndarray:
        """The same matrix for a few rows (online scoring): one object conversion, no column selection."""
        if self._lookup is None:
            self._lookup = {name: {lv: float(i) for i, lv in enumerate(levels)}
                            for name, levels in self.categories.items()}
        values = frame.to_numpy(dtype=object, na_value=np.nan)
        pos = frame.columns.get_indexer(self.columns)
        out = np.empty((len(frame), len(self.columns)), dtype=np.float64)
        numeric = [i for i, c in enumerate(self.columns) if c not in self.categories]
        if numeric:
            out[:, numeric] = values[:, pos[numeric]].astype(np.float64)
        for name, lookup in self._lookup.items():
            j = self.columns.index(name)
            out[:, j] = [lookup.get(str(v), np.nan) if v is not None and v == v else np.nan
                         for v in values[:, pos[j]]]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"columns": self.columns, "categories": self.categories}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureSpec":
        return cls(columns=list(d["columns"]), categories={k: list(v) for k, v in d.get("categories", {}).items()})

    def save(self, path: Path) -> Path:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "FeatureSpec":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def member_ids(frame: pd.DataFrame) -> np.ndarray:
    """The frame's member ids (the member_id column, else the index) as an array of str."""
    ids = frame[MEMBER_ID].to_numpy() if MEMBER_ID in frame.columns else frame.index.to_numpy()
    return ids.astype(str)


def threads_for(rows: int, big: int = 1) -> int:
    """LightGBM threads for a predict call: one for small inputs (thread start-up costs ~1 ms), else `big`.

    `big` defaults to 1 too: on a small machine shared with other work, OpenMP threads that wait on busy cores make
    prediction many times slower; set a model's `threads = 0` to use every core on a dedicated scoring machine.
    """
    return 1 if rows < 2000 else big
