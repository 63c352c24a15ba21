"""Training sets: features at many cutoffs stacked with their labels, plus a manifest; temporal splits.

Each row is (member, cutoff) for a member with a paid order before the cutoff (the label population), with the
features as of the cutoff (rows strictly before it) and the labels over [cutoff, cutoff + H). A temporal split keeps
only training cutoffs whose label windows end before the validation cutoff, so no training label overlaps the
validation period.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from features.engine import DuckDBEngine, Engine, TableSource, as_timestamp
from features.labels import (DEFAULT_CHURN_HORIZON, DEFAULT_LTV_HORIZON, DEFAULT_TIMING_HORIZON, LABEL_COLUMNS,
                             compute_labels)
from features.pipeline import FEATURE_VERSION, categorical_features, compute_features
from features.store import Store, atomic_write_json, atomic_write_parquet


def manifest_path(path: str | Path) -> Path:
    """Where the manifest of an output file lives: `F.parquet` → `F.manifest.json`."""
    p = Path(path)
    return p.with_name(p.stem + ".manifest.json")


def source_fingerprint(source: TableSource) -> dict[str, Any]:
    """Identify the data a set was built from: a Store's path and fingerprint, or a hash of in-memory tables."""
    if isinstance(source, (str, Path)):
        source = Store(source)
    if isinstance(source, Store):
        return {"store": str(source.path.resolve()), "fingerprint": source.fingerprint(), "tables": source.tables()}
    h = hashlib.sha256()
    for name in sorted(source):
        df = source[name]
        if df is not None:
            h.update(name.encode())
            h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return {"store": None, "fingerprint": h.hexdigest()[:16], "tables": sorted(k for k, v in source.items()
                                                                             if v is not None)}


@dataclass
class TrainingSet:
    """`frame`: member_id, cutoff, features…, labels…; `manifest`: how it was made (see build_training_set)."""

    frame: pd.DataFrame
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def feature_columns(self) -> list[str]:
        return list(self.manifest["features"])

    @property
    def categorical_columns(self) -> list[str]:
        return list(self.manifest["categorical_features"])

    def write(self, path: str | Path) -> Path:
        """Write the frame as Parquet and the manifest next to it (`X.manifest.json`), both atomically."""
        path = Path(path)
        atomic_write_parquet(self.frame, path)
        atomic_write_json(manifest_path(path), self.manifest)
        return path

    @classmethod
    def read(cls, path: str | Path) -> "TrainingSet":
        path = Path(path)
        mp = manifest_path(path)
        if not mp.exists():
            raise FileNotFoundError(f"{path} has no manifest ({mp.name}); was it written by TrainingSet.write?")
        return cls(pd.read_parquet(path), json.loads(mp.read_text(encoding="utf-8")))


def build_training_set(source: TableSource, cutoffs: Iterable[object], *,
                       churn_horizon: int = DEFAULT_CHURN_HORIZON, ltv_horizon: int = DEFAULT_LTV_HORIZON,
                       timing_horizon: int = DEFAULT_TIMING_HORIZON, strict: bool = True,
                       engine: str | Engine = "duckdb",
                       progress: Callable[[pd.Timestamp], None] | None = None) -> TrainingSet:
    """Features + labels at every cutoff, stacked (a `cutoff` column), with a manifest.

    Manifest: source (store path and fingerprint), cutoffs, horizons, feature names and categorical ones, label
    columns, FEATURE_VERSION and the definitions digest, row counts (total and per cutoff), creation time.
    `strict` is passed to compute_labels (label windows must lie inside the data).
    """
    cuts = sorted({as_timestamp(c, "cutoff") for c in cutoffs})
    if not cuts:
        raise ValueError("cutoffs: give at least one cutoff date")
    if isinstance(source, (str, Path)):
        source = Store(source)
    eng = DuckDBEngine() if engine == "duckdb" else engine
    if isinstance(eng, str):
        raise ValueError(f"unknown engine {engine!r}")
    parts = []
    attrs: dict[str, Any] = {}
    try:
        for c in cuts:
            labels = compute_labels(source, c, churn_horizon=churn_horizon, ltv_horizon=ltv_horizon,
                                    timing_horizon=timing_horizon, engine=eng, strict=strict)
            feats = compute_features(source, c, engine=eng, members=None)
            attrs = feats.attrs
            part = labels[["member_id"]].merge(feats, on="member_id", how="left", validate="one_to_one")
            part = part.merge(labels, on="member_id", how="left", validate="one_to_one")
            part.insert(1, "cutoff", c)
            parts.append(part)
            if progress is not None:
                progress(c)
    finally:
        if isinstance(engine, str):
            eng.close()
    frame = pd.concat(parts, ignore_index=True)
    frame["cutoff"] = frame["cutoff"].astype("datetime64[us]")
    features = [c for c in frame.columns if c not in ("member_id", "cutoff", *LABEL_COLUMNS)]
    manifest = {
        **source_fingerprint(source),
        "cutoffs": [c.isoformat() for c in cuts],
        "horizons": {"churn_horizon": churn_horizon, "ltv_horizon": ltv_horizon, "timing_horizon": timing_horizon},
        "features": features,
        "categorical_features": [c for c in categorical_features(attrs.get("tables", ())) if c in features],
        "labels": list(LABEL_COLUMNS),
        "feature_version": FEATURE_VERSION,
        "definitions": attrs.get("definitions"),
        "rows": int(len(frame)),
        "rows_per_cutoff": {c.isoformat(): int(len(p)) for c, p in zip(cuts, parts)},
        "created_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return TrainingSet(frame, manifest)


def monthly_cutoffs(start: object, end: object) -> list[pd.Timestamp]:
    """First-of-month cutoffs from `start` (rounded up to a month start) to `end` inclusive."""
    s, e = as_timestamp(start, "start"), as_timestamp(end, "end")
    if e < s:
        raise ValueError(f"end {e.date()} is before start {s.date()}")
    first = s.normalize().replace(day=1)
    if first < s:
        first = first + pd.offsets.MonthBegin(1)
    return [pd.Timestamp(x) for x in pd.date_range(first, e, freq="MS")]


class TemporalSplit(NamedTuple):
    """Training cutoffs whose label windows [c, c + horizon) end by the validation cutoff, and that cutoff."""

    train: list[pd.Timestamp]
    validation: pd.Timestamp
    horizon_days: int

    def split_frame(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(training rows, validation rows) of a training-set frame by its `cutoff` column."""
        cut = pd.to_datetime(frame["cutoff"])
        train = frame[cut.isin(self.train)].reset_index(drop=True)
        valid = frame[cut == self.validation].reset_index(drop=True)
        return train, valid


def temporal_split(cutoffs: Sequence[object], validation_cutoff: object, horizon: int) -> TemporalSplit:
    """Keep the cutoffs c with c + horizon days ≤ validation_cutoff for training (no label-window overlap)."""
    if horizon <= 0:
        raise ValueError(f"horizon must be a positive number of days, got {horizon!r}")
    v = as_timestamp(validation_cutoff, "validation_cutoff")
    cuts = sorted({as_timestamp(c, "cutoff") for c in cutoffs})
    train = [c for c in cuts if c + pd.Timedelta(days=horizon) <= v]
    if not train:
        raise ValueError(f"no training cutoff ends its {horizon}-day label window by the validation cutoff "
                         f"{v.date()}; earliest cutoff is {cuts[0].date() if cuts else None}")
    return TemporalSplit(train, v, int(horizon))
