"""Benefits per tier rank, as columns (vectorised lookup of the ladder's `benefits`)."""
from __future__ import annotations

import numpy as np

from loyalty.config import Benefits, LoyaltyConfig

BENEFIT_COLUMNS = ("discount_rate", "points_multiplier", "priority_shipping", "dedicated_service", "birthday_gift",
                   "member_day")


def benefits_for(rank: int, config: LoyaltyConfig) -> Benefits:
    """Benefits of a tier rank; an unknown tier (-1) gets the entry tier's benefits (never more than earned)."""
    return config.ladder.tiers[max(int(rank), 0)].benefits


def benefit_columns(rank: np.ndarray, config: LoyaltyConfig) -> dict[str, np.ndarray]:
    r = np.maximum(np.asarray(rank, dtype=np.int64), 0)
    out: dict[str, np.ndarray] = {}
    for col in BENEFIT_COLUMNS:
        table = np.array([getattr(t.benefits, col) for t in config.ladder.tiers])
        out[col] = table[r]
    return out
