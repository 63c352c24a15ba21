"""Business rules applied after ranking, and the short reason shown with each recommendation.

Rules are configuration (a pydantic model, loadable from YAML): exclude items bought recently that are not
consumable (a sofa bought last week is not worth showing again; milk powder is), excluded categories and items, and
an optional allow-list (e.g. the items on sale). This module needs only numpy/pandas/pydantic so that the serving
model (`scorer.py`) can carry it inside the MLflow artifact.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class RulesConfig(BaseModel):
    """What may be recommended. Empty lists mean "no restriction"."""

    model_config = ConfigDict(extra="forbid")

    exclude_recent_non_consumable_days: float = Field(
        30.0, ge=0, description="drop non-consumable items the member bought fewer than this many days ago")
    infer_consumable_repeat_rate: float | None = Field(
        0.02, ge=0, le=1,
        description="when items.is_consumable is unknown, treat an item as consumable if at least this share of its "
                    "buyers bought it again (None: unknown means consumable)")
    exclude_categories: list[str] = Field(default_factory=list, description="categories never recommended")
    exclude_items: list[str] = Field(default_factory=list, description="items never recommended")
    allow_items: list[str] | None = Field(None, description="if set, only these items may be recommended")

    @classmethod
    def from_yaml(cls, path: str | Path) -> "RulesConfig":
        import yaml

        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        return cls.model_validate(data.get("rules", data))


def consumable_flags(is_consumable: np.ndarray, repeat_rate: np.ndarray, rules: RulesConfig) -> np.ndarray:
    """Boolean per item: known flags win (1/0); unknown (-1) falls back to the observed repeat-purchase rate."""
    known = is_consumable >= 0
    if rules.infer_consumable_repeat_rate is None:
        inferred = np.ones(len(is_consumable), dtype=bool)
    else:
        inferred = repeat_rate >= rules.infer_consumable_repeat_rate
    return np.where(known, is_consumable == 1, inferred)


def allowed_mask(item_idx: np.ndarray, days_since_bought: np.ndarray, *, item_ids: np.ndarray,
                 item_category: np.ndarray, categories: np.ndarray, consumable: np.ndarray,
                 rules: RulesConfig) -> np.ndarray:
    """True where a candidate (item index, days since the member last bought it; NaN = never) passes every rule."""
    ok = np.ones(len(item_idx), dtype=bool)
    if rules.exclude_recent_non_consumable_days > 0:
        recent = np.nan_to_num(days_since_bought, nan=np.inf) < rules.exclude_recent_non_consumable_days
        ok &= ~(recent & ~consumable[item_idx])
    if rules.exclude_categories:
        bad_cat = np.isin(categories, rules.exclude_categories)
        cat = item_category[item_idx]
        ok &= ~((cat >= 0) & bad_cat[np.maximum(cat, 0)])
    if rules.exclude_items:
        ok &= ~np.isin(item_ids[item_idx], rules.exclude_items)
    if rules.allow_items is not None:
        ok &= np.isin(item_ids[item_idx], rules.allow_items)
    return ok


def _gap_text(days: float) -> str:
    if days < 1.5:
        return "every day"
    if days < 13:
        return f"every ~{days:.0f} days"
    if days < 60:
        return f"every ~{days / 7:.0f} weeks"
    return f"every ~{days / 30.4:.0f} months"


def _gap_texts(gap: np.ndarray) -> np.ndarray:
    """"you buy this …" for an array of cycles: the few distinct displayed texts are formatted once, then spread."""
    unit = np.select([gap < 1.5, gap < 13, gap < 60], [0, 1, 2], 3)
    divisor = np.array([1.0, 1.0, 7.0, 30.4])[unit]
    shown = np.where(unit == 0, 0.0, np.round(gap / divisor))
    key = unit * 1e9 + shown
    _, first, inv = np.unique(key, return_index=True, return_inverse=True)
    texts = np.array([f"you buy this {_gap_text(float(gap[k]))}" for k in first], dtype=object)
    return texts[inv.reshape(-1)]


def reasons(*, n_bought: np.ndarray, mean_gap: np.ndarray, n_engaged: np.ndarray, seed_item: np.ndarray,
            category: np.ndarray, source: np.ndarray) -> np.ndarray:
    """One short, human reason per recommendation, from what put it on the list (vectorised: the batch path
    explains millions of rows).

    `source` codes: 0 history, 1 bought together (item-kNN), 2 similar members (ALS), 3 popularity.
    """
    n = len(n_bought)
    out = np.full(n, "popular this week", dtype=object)
    if n == 0:
        return out
    gap = np.asarray(mean_gap, dtype=float)
    seed = np.asarray(seed_item, dtype=object)
    cat = np.asarray(category, dtype=object)
    has_seed = _nonempty(seed)
    has_cat = _nonempty(cat)
    cycle = (n_bought >= 2) & np.isfinite(gap)
    before = ~cycle & (n_bought >= 1)
    looked = ~cycle & ~before & (n_engaged > 0)
    rest = ~cycle & ~before & ~looked
    together = rest & (source == 1) & has_seed
    similar = rest & ~together & (source == 2)
    popular_cat = rest & ~together & ~similar & has_cat
    if cycle.any():
        out[cycle] = _gap_texts(gap[cycle])
    out[before] = "you bought this before"
    out[looked] = "you looked at this recently"
    if together.any():
        out[together] = np.char.add("often bought with ", seed[together].astype(str)).astype(object)
    out[similar] = "members with similar baskets buy this"
    if popular_cat.any():
        out[popular_cat] = np.char.add(np.char.add("popular in ", cat[popular_cat].astype(str)),
                                       " this week").astype(object)
    return out


def _nonempty(values: np.ndarray) -> np.ndarray:
    """True where an object array holds a non-empty string."""
    s = values.astype(str)
    return (s != "") & (s != "None") & (s != "nan")


def rules_from_params(params: dict[str, Any] | None) -> RulesConfig:
    return RulesConfig.model_validate(params or {})
