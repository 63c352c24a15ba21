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


def reasons(*, n_bought: np.ndarray, mean_gap: np.ndarray, n_engaged: np.ndarray, seed_item: np.ndarray,
            category: np.ndarray, source: np.ndarray) -> list[str]:
    """One short, human reason per recommendation, from what put it on the list.

    `source` codes: 0 history, 1 bought together (item-kNN), 2 similar members (ALS), 3 popularity. Only the final
    top-N rows come here, so a small Python comprehension over them is cheap.
    """
    out: list[str] = []
    for nb, gap, ne, seed, cat, src in zip(n_bought, mean_gap, n_engaged, seed_item, category, source, strict=True):
        if nb >= 2 and np.isfinite(gap):
            out.append(f"you buy this {_gap_text(float(gap))}")
        elif nb >= 1:
            out.append("you bought this before")
        elif ne > 0:
            out.append("you looked at this recently")
        elif src == 1 and seed:
            out.append(f"often bought with {seed}")
        elif src == 2:
            out.append("members with similar baskets buy this")
        elif cat:
            out.append(f"popular in {cat} this week")
        else:
            out.append("popular this week")
    return out


def rules_from_params(params: dict[str, Any] | None) -> RulesConfig:
    return RulesConfig.model_validate(params or {})
