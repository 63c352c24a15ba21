"""Online lookup for /score by member_id: the materialized feature table plus each member's loyalty state.

Features come from `features.online.OnlineFeatureTable` (the batch pipeline's output, loaded into memory once).
The loyalty state (tier name, next tier, points expiring, segments) is not part of the feature table, so it is
computed once at start-up for every member by `loyalty.batch.member_state` over the same store, at the table's
as_of (the same rules and the same cut-off as the features), and indexed by member_id.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from features.contract import MEMBER_ID
from features.online import OnlineFeatureTable

log = logging.getLogger("member_ml.serving.online")


def _plain(v: Any) -> Any:
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, pd.Timestamp):
        return v.to_pydatetime()
    return v.item() if hasattr(v, "item") else v


@dataclass
class OnlineLookup:
    """Features and loyalty state per member, in memory, as of the feature table's as_of."""

    table: OnlineFeatureTable
    loyalty_state: dict[str, dict[str, Any]]

    @property
    def as_of(self) -> pd.Timestamp:
        return self.table.as_of

    def features(self, member_id: str) -> pd.DataFrame | None:
        """A one-row feature frame (compute_features' dtypes) or None for an unknown member."""
        if member_id not in self.table:
            return None
        return self.table.get_many([member_id])

    def recent_items(self, member_id: str) -> pd.DataFrame:
        """The member's recs history rows (bought and seen items, `features.pipeline.compute_recent_items`)."""
        return self.table.recent_items(member_id)

    def loyalty(self, member_id: str) -> dict[str, Any] | None:
        return self.loyalty_state.get(member_id)


def loyalty_states(store_path: Path, as_of: pd.Timestamp, config: Any) -> dict[str, dict[str, Any]]:
    """Every member's loyalty state from the store at `as_of`, as plain dicts keyed by member_id."""
    from features.store import Store
    from loyalty.batch import member_state

    store = Store(store_path)
    orders = store.read("orders")
    events = store.read_optional("events")
    members = store.read_optional("members")
    frame = member_state(orders, events, members, as_of, config)
    cols = list(frame.columns)
    return {r[MEMBER_ID]: {c: _plain(r[c]) for c in cols} for r in frame.to_dict("records")}


def open_lookup(table_path: Path, store_path: Path | None, loyalty_config: Any) -> OnlineLookup:
    """Load the feature table and, when the store is there, every member's loyalty state."""
    table = OnlineFeatureTable(table_path)
    states: dict[str, dict[str, Any]] = {}
    if store_path is not None and store_path.exists():
        states = loyalty_states(store_path, table.as_of, loyalty_config)
    else:
        log.warning("store %s not found: /score by member_id answers loyalty from the feature table only", store_path)
    log.info("online table %s: %d members as of %s; loyalty state for %d", table_path, len(table), table.as_of,
             len(states))
    return OnlineLookup(table, states)
