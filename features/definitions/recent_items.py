"""Items each member bought in the 365 days before T: the serving-time input of the recommenders."""
from __future__ import annotations

from features.definitions import base
from features.engine import Plan

RECENT_ITEMS_DAYS = 365
# Time-decayed order counts the recommendation ranker is trained on (training/member_pyfunc/recs.py DECAY_COLUMNS):
# column → half-life in days. Served from here so the online ranker sees what it was trained on.
DECAYED_ORDER_COUNTS: dict[str, float] = {"n_bought_hl14": 14.0, "n_bought_hl56": 56.0}


def recent_items_plan(t: str, tables: frozenset[str], days: int = RECENT_ITEMS_DAYS) -> Plan:
    """(member_id, item_id, category, n_bought, last_bought_at, first_bought_at, spend, n_bought_hl14, n_bought_hl56)
    over paid lines in [T − days, T).

    As the recommender's own history summary (training/member_pyfunc/recs.py `summarise_history`) counts them: an
    item refunded or cancelled in an order does not count for that order; n_bought counts the orders holding the
    item (several lines of one order count once); n_bought_hl* weigh each order by 2^(−age in days ÷ half-life) at T;
    first_bought_at and spend (sum of the paid lines' amounts, null when none is known) cover the same window, as
    the ranker's training summary does (`summarise_history(window_days=HISTORY_DAYS)`, the same 365 days).
    category: the lines' category (the smallest when they differ), else the item catalogue's.
    """
    steps = tuple(s for s in base.steps(t, tables) if s.name == "ol")
    decayed = "".join(f",\n               SUM(POWER(2.0, -(DATE_DIFF('second', bought_at, {t}) / 86400.0) / {hl})) AS {col}"
                      for col, hl in DECAYED_ORDER_COUNTS.items())
    agg = f"""
        SELECT member_id, item_id, MIN(category) AS category, CAST(COUNT(*) AS BIGINT) AS n_bought,
               MAX(bought_at) AS last_bought_at, MIN(bought_at) AS first_bought_at,
               CAST(SUM(amount) AS DOUBLE) AS spend{decayed}
        FROM (
          SELECT member_id, item_id, order_id, MIN(category) AS category, MIN(ordered_at) AS bought_at,
                 SUM(amount) AS amount
          FROM ol
          WHERE status = 'paid' AND item_id IS NOT NULL AND ordered_at >= {t} - INTERVAL {days} DAY
            AND NOT EXISTS (SELECT 1 FROM ol u
                            WHERE u.status <> 'paid' AND u.order_id = ol.order_id AND u.item_id = ol.item_id)
          GROUP BY member_id, item_id, order_id
        ) o
        GROUP BY member_id, item_id"""
    cols = ", ".join(f"r.{c}" for c in DECAYED_ORDER_COUNTS)
    item_cat = base.item_category_sql(tables)
    if item_cat is None:
        final = f"SELECT * FROM ({agg}) r ORDER BY member_id, item_id"
    else:
        final = f"""
            SELECT r.member_id, r.item_id, COALESCE(r.category, i.category) AS category, r.n_bought,
                   r.last_bought_at, r.first_bought_at, r.spend, {cols}
            FROM ({agg}) r LEFT JOIN ({item_cat}) i ON r.item_id = i.item_id
            ORDER BY r.member_id, r.item_id"""
    return Plan(steps, final)
