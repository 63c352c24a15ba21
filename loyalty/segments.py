"""Value and lifecycle segments with the documents' tiered marketing strategy (document 003).

value: paid spend (net of refunds) over the last `window_days` against `high_spend` / `mid_spend`; when a member's
amounts are unknown (stores without prices) their paid-order count against `high_orders` / `mid_orders`.
lifecycle: `new` when joined (or first seen) within `new_days`; otherwise by days since the last paid order:
active ≤ active_days < silent ≤ silent_days < churned; members who never bought are silent until `silent_days`
after they were first seen, then churned.
"""
from __future__ import annotations

import numpy as np

from loyalty.config import LoyaltyConfig

DAY_US = 86_400_000_000
NO_TIME = np.iinfo(np.int64).min


def value_segment(spend_cents: np.ndarray, complete: np.ndarray, orders: np.ndarray,
                  config: LoyaltyConfig) -> np.ndarray:
    v = config.segments.value
    by_spend = np.where(spend_cents >= round(v.high_spend * 100), "high",
                        np.where(spend_cents >= round(v.mid_spend * 100), "mid", "low"))
    by_orders = np.where(orders >= v.high_orders, "high", np.where(orders >= v.mid_orders, "mid", "low"))
    return np.where(complete, by_spend, by_orders).astype(object)


def lifecycle_segment(first_seen: np.ndarray, last_order: np.ndarray, as_of: int, config: LoyaltyConfig) -> np.ndarray:
    lc = config.segments.lifecycle
    seen = first_seen != NO_TIME
    new = seen & (first_seen >= as_of - lc.new_days * DAY_US)
    bought = last_order != NO_TIME
    days = np.where(bought, (as_of - np.where(bought, last_order, as_of)) / DAY_US, np.inf)
    since_seen = np.where(seen, (as_of - np.where(seen, first_seen, as_of)) / DAY_US, np.inf)
    by_recency = np.where(days <= lc.active_days, "active", np.where(days <= lc.silent_days, "silent", "churned"))
    never = np.where(since_seen <= lc.silent_days, "silent", "churned")
    return np.where(new, "new", np.where(bought, by_recency, never)).astype(object)


def strategy(value: np.ndarray, config: LoyaltyConfig) -> np.ndarray:
    s = config.segments.strategy
    return np.where(value == "high", s.high, np.where(value == "mid", s.mid, s.low)).astype(object)
