"""The next-purchase timing model as served: a LightGBM discrete-time hazard over day bins up to the horizon.

`predict(context, features)` returns, per member: p_7, p_14, p_30, p_60, p_90 (P(next paid order within d days of
the as-of date), monotone in d by construction), median_days, expected_days (E[min(T, max_days)]) and
next_purchase_date (as-of + median, rounded up to a day; the as-of comes from params={"as_of": ...} or the frame's
`as_of`/`cutoff` column, else it is left empty).

The model also carries the replenishment estimator and its parameters: `replenishment(orders, as_of)` returns one
row per member × category with the cycle, due date and reminder flag, so batch scoring can build the "category due
within 7 days" audience from the champion model alone (`due_within(cycles, 7)`).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightgbm as lgb
import mlflow.pyfunc
import numpy as np
import pandas as pd

from .matrix import MEMBER_ID, FeatureSpec, member_ids
from .replenishment import (ReplenishmentParams, category_counts, category_stats, due_within, estimate_cycles,
                            finish_cycles, pair_cycles)
from .timing_hazard import ROLES, cdf_at, expected_days, median_days, person_period_matrix, role_indices, validate_edges

REPORT_DAYS: tuple[int, ...] = (7, 14, 30, 60, 90)
OUTPUT_COLUMNS = [MEMBER_ID] + [f"p_{d}" for d in REPORT_DAYS] + ["median_days", "expected_days",
                                                                  "next_purchase_date"]
AS_OF_COLUMNS = ("as_of", "cutoff")


class TimingModel(mlflow.pyfunc.PythonModel):
    """pyfunc: feature frame → member_id, p_7 … p_90, median_days, expected_days, next_purchase_date."""

    def __init__(self, booster: lgb.Booster | None = None, spec: FeatureSpec | None = None,
                 meta: dict[str, Any] | None = None) -> None:
        self.booster = booster
        self.spec = spec
        self.meta: dict[str, Any] = dict(meta or {})
        if self.meta:
            self._check_meta()

    def _check_meta(self) -> None:
        validate_edges(self.meta["edges"])
        self.meta.setdefault("max_days", 730.0)
        self.meta.setdefault("report_days", list(REPORT_DAYS))
        self.meta.setdefault("replenishment", ReplenishmentParams().to_dict())
        self.meta.setdefault("chunk_members", 20_000)
        self.meta.setdefault("roles", dict(ROLES))

    # -- persistence: LightGBM text model + JSON, nothing pickled --
    def save_artifacts(self, folder: Path) -> dict[str, str]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(folder / "booster.txt"))
        self.spec.save(folder / "spec.json")
        (folder / "timing.json").write_text(json.dumps(self.meta, indent=1, ensure_ascii=False), encoding="utf-8")
        return {"booster": str(folder / "booster.txt"), "spec": str(folder / "spec.json"),
                "meta": str(folder / "timing.json")}

    def load_context(self, context) -> None:  # noqa: ANN001 (mlflow PythonModelContext)
        a = context.artifacts
        self.booster = lgb.Booster(model_file=a["booster"])
        self.spec = FeatureSpec.load(a["spec"])
        self.meta = json.loads(Path(a["meta"]).read_text(encoding="utf-8"))
        self._check_meta()

    # -- scoring --
    @property
    def edges(self) -> list[float]:
        return list(self.meta["edges"])

    @property
    def horizon_days(self) -> float:
        return float(self.meta["edges"][-1])

    def hazards(self, frame: pd.DataFrame) -> np.ndarray:
        """Bin hazards (members × bins), predicted in chunks of members so memory stays bounded."""
        x = self.spec.matrix(frame)
        edges = self.edges
        n_bins = len(edges) - 1
        idx = role_indices(self.spec.columns, self.meta["roles"])
        out = np.empty((len(x), n_bins), dtype=np.float64)
        step = int(self.meta.get("chunk_members", 20_000))
        for lo in range(0, len(x), step):
            part = x[lo:lo + step]
            member = np.repeat(np.arange(len(part)), n_bins)
            k = np.tile(np.arange(n_bins), len(part))
            pp = person_period_matrix(part, member, k, edges, idx)
            out[lo:lo + len(part)] = self.booster.predict(pp).reshape(len(part), n_bins)
        return out

    def cdf(self, frame: pd.DataFrame, days: Sequence[float]) -> np.ndarray:
        """P(next order within d) per member × d (any d ≥ 0; past the horizon the last bin's rate continues)."""
        return cdf_at(self.hazards(frame), self.edges, days)

    def predict(self, context, model_input, params=None):  # noqa: ANN001 (no type hints: skip mlflow's wrapping)
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        h = self.hazards(frame)
        days = list(self.meta["report_days"])
        cdf = cdf_at(h, self.edges, days)
        out = pd.DataFrame({MEMBER_ID: member_ids(frame)})
        for j, d in enumerate(days):
            out[f"p_{d}"] = cdf[:, j]
        med = median_days(h, self.edges, float(self.meta["max_days"]))
        out["median_days"] = med
        out["expected_days"] = expected_days(h, self.edges, float(self.meta["max_days"]))
        as_of = _as_of(frame, params)
        out["next_purchase_date"] = (as_of + pd.to_timedelta(np.ceil(med), unit="D")).dt.normalize() \
            .astype("datetime64[us]").to_numpy()
        return out

    # -- replenishment (pure orders logic carried with the model) --
    def replenishment(self, orders: pd.DataFrame, as_of: Any, items: pd.DataFrame | None = None,
                      categories: pd.DataFrame | None = None) -> pd.DataFrame:
        """Cycles, due dates and reminder flags per member × category as of `as_of` (see `replenishment.py`);
        `categories` = the whole store's `replenishment_categories` when `orders` holds only some members."""
        return estimate_cycles(orders, as_of, items=items, params=self.meta.get("replenishment"),
                               categories=categories)

    # the estimator in its member-local and store-wide parts, for scoring the members in chunks (serving.batch,
    # serving.spark_batch): pairs per chunk → counts (summed over chunks) → category stats → finish per chunk
    def replenishment_pairs(self, orders: pd.DataFrame, as_of: Any,
                            items: pd.DataFrame | None = None) -> pd.DataFrame:
        """The member-local statistics per member × category (`replenishment.pair_cycles`)."""
        return pair_cycles(orders, as_of, items=items, params=self.meta.get("replenishment"))

    @staticmethod
    def replenishment_counts(pairs: pd.DataFrame) -> pd.DataFrame:
        """Mergeable per-category counts of some members' pairs (`replenishment.category_counts`)."""
        return category_counts(pairs)

    @staticmethod
    def replenishment_categories(counts: pd.DataFrame) -> pd.DataFrame:
        """Category medians and regular shares from the counts of all the members (`replenishment.category_stats`)."""
        return category_stats(counts)

    def replenishment_finish(self, pairs: pd.DataFrame, categories: pd.DataFrame, as_of: Any,
                             items: pd.DataFrame | None = None) -> pd.DataFrame:
        """`replenishment`'s rows for `pairs`, given the store's category stats (`replenishment.finish_cycles`)."""
        return finish_cycles(pairs, categories, as_of, items=items, params=self.meta.get("replenishment"))

    @staticmethod
    def due_within(cycles: pd.DataFrame, days: float, grace_days: float = 0.0) -> pd.DataFrame:
        """Reminder pairs due in [as_of − grace_days, as_of + days) (the campaign's replenishment audience)."""
        return due_within(cycles, days, grace_days=grace_days)


def _as_of(frame: pd.DataFrame, params: dict[str, Any] | None) -> pd.Series:
    """The as-of date per row: params["as_of"], else an as_of/cutoff column, else NaT."""
    n = len(frame)
    if params and params.get("as_of"):
        return pd.Series(pd.Timestamp(params["as_of"]), index=range(n)).astype("datetime64[us]")
    for c in AS_OF_COLUMNS:
        if c in frame.columns:
            return pd.to_datetime(frame[c]).reset_index(drop=True).astype("datetime64[us]")
    return pd.Series(pd.NaT, index=range(n), dtype="datetime64[us]")
