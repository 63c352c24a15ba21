"""Engagement features from the events table: counts by event type over the last 30 and 90 days, totals, recency.

The columns are fixed by the contract's EVENT_TYPES (never by the data), so the feature set depends only on which
tables are present. Events of a type outside the contract count in the totals only.
"""
from __future__ import annotations

from features.contract import EVENT_TYPES
from features.definitions import Family, FeatureSpec
from features.engine import Step

ENGAGEMENT_WINDOWS: tuple[int, ...] = (30, 90)


def families(t: str, tables: frozenset[str]) -> list[Family]:
    sums = []
    feats = [
        FeatureSpec("events_lifetime", "COALESCE(e.n_events, 0)", "numeric", "engagement", "events before T"),
        FeatureSpec("days_since_last_event", f"DATE_DIFF('second', e.last_event_at, {t}) / 86400.0",
                    "numeric", "engagement", "days since the last event"),
    ]
    for w in ENGAGEMENT_WINDOWS:
        sums.append(f"SUM(n_{w}d) AS events_{w}d")
        feats.append(FeatureSpec(f"events_{w}d", f"COALESCE(e.events_{w}d, 0)", "numeric", "engagement",
                                 f"events of any type in the last {w} days"))
        for typ in EVENT_TYPES:
            sums.append(f"MAX(CASE WHEN type = '{typ}' THEN n_{w}d ELSE 0 END) AS ev_{typ}_{w}d")
            feats.append(FeatureSpec(f"ev_{typ}_{w}d", f"COALESCE(e.ev_{typ}_{w}d, 0)", "numeric", "engagement",
                                     f"'{typ}' events in the last {w} days"))
    wmax = max(ENGAGEMENT_WINDOWS)
    windows = ", ".join(f"COUNT(CASE WHEN occurred_at >= {t} - INTERVAL {w} DAY THEN 1 END) AS n_{w}d"
                        for w in ENGAGEMENT_WINDOWS)
    # Lifetime count and last event per member in one pass over the events; the counts by type are only windowed,
    # so they read the last `wmax` days only, grouped by (member, type), then pivoted (one row per member and type:
    # MAX picks the type's count). COUNT(CASE …) is a BIGINT where SUM(CASE … 1 ELSE 0) would be accumulated by
    # DuckDB as a 128-bit integer. Both are read once, by `evagg` (views: never stored).
    total = Step("evtotal", """
        SELECT member_id, COUNT(*) AS n_events, MAX(occurred_at) AS last_event_at FROM ev GROUP BY member_id""", view=True)
    by_type = Step("evtype", f"""
        SELECT member_id, type, {windows}
        FROM ev WHERE occurred_at >= {t} - INTERVAL {wmax} DAY GROUP BY member_id, type""", view=True)
    cols = [c.rsplit(" AS ", 1)[1] for c in sums]
    step = Step("evagg", f"""
        SELECT t.member_id, t.n_events, t.last_event_at, {', '.join(f"p.{c}" for c in cols)}
        FROM evtotal t LEFT JOIN (
          SELECT member_id, {', '.join(sums)} FROM evtype GROUP BY member_id
        ) p ON p.member_id = t.member_id""")
    return [Family("engagement", frozenset({"events"}), (total, by_type, step), ("evagg e",), tuple(feats),
                   population=("evagg",))]
