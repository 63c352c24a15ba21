"""Items each member bought in the 365 days before T: the serving-time input of the recommenders."""
from __future__ import annotations

from features.definitions import base
from features.engine import Plan

RECENT_ITEMS_DAYS = 365


def recent_items_plan(t: str, tables: frozenset[str], days: int = RECENT_ITEMS_DAYS) -> Plan:
    """(member_id, item_id, category, n_bought, last_bought_at) over paid lines in [T − days, T).

    category: the lines' category (the smallest when they differ), else the item catalogue's.
    """
    steps = tuple(s for s in base.steps(t, tables) if s.name == "ol")
    agg = f"""
        SELECT member_id, item_id, MIN(category) AS category, CAST(COUNT(*) AS BIGINT) AS n_bought,
               MAX(ordered_at) AS last_bought_at
        FROM ol
        WHERE status = 'paid' AND item_id IS NOT NULL AND ordered_at >= {t} - INTERVAL {days} DAY
        GROUP BY member_id, item_id"""
    item_cat = base.item_category_sql(tables)
    if item_cat is None:
        final = f"SELECT * FROM ({agg}) r ORDER BY member_id, item_id"
    else:
        final = f"""
            SELECT r.member_id, r.item_id, COALESCE(r.category, i.category) AS category, r.n_bought,
                   r.last_bought_at
            FROM ({agg}) r LEFT JOIN ({item_cat}) i ON r.item_id = i.item_id
            ORDER BY r.member_id, r.item_id"""
    return Plan(steps, final)
