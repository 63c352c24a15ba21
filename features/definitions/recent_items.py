"""Items each member bought or engaged with in the 365 days before T: the serving-time input of the recommenders."""
from __future__ import annotations

from features.definitions import base
from features.engine import Plan

RECENT_ITEMS_DAYS = 365
# The recommender's history summary (training/member_pyfunc/recs.py `summarise_history`, which the ranker is trained
# on) counts orders and item events with these columns; they are served from here so the online ranker sees what it
# was trained on. The model's code is bundled with it (it cannot import this module), so the two are mirrored and
# tests/test_recs_history_parity.py checks them equal to recs.DECAY_COLUMNS.
# Time-decayed order counts: column → half-life in days.
DECAYED_ORDER_COUNTS: dict[str, float] = {"n_bought_hl14": 14.0, "n_bought_hl56": 56.0}
# Item events of these types count (view / cart / favorite): column → event type.
EVENT_COUNTS: dict[str, str] = {"n_view": "view", "n_cart": "cart", "n_favorite": "favorite"}
# Time-decayed event counts: column → (event type, half-life in days).
DECAYED_EVENT_COUNTS: dict[str, tuple[str, float]] = {"n_view_hl1": ("view", 1.0), "n_cart_hl1": ("cart", 1.0)}


def _decay(at: str, t: str, half_life: float) -> str:
    """SQL for 2^(−age in days ÷ half-life) of timestamp `at` at T."""
    return f"POWER(2.0, -(DATE_DIFF('second', {at}, {t}) / 86400.0) / {half_life})"


def recent_items_plan(t: str, tables: frozenset[str], days: int = RECENT_ITEMS_DAYS) -> Plan:
    """(member_id, item_id, category, n_bought, last_bought_at, first_bought_at, spend, n_bought_hl14, n_bought_hl56,
    n_view, n_cart, n_favorite, n_view_hl1, n_cart_hl1, last_seen_at) over paid lines and item events in
    [T − days, T).

    As the recommender's own history summary (training/member_pyfunc/recs.py `summarise_history`) counts them: an
    item refunded or cancelled in an order does not count for that order; n_bought counts the orders holding the
    item (several lines of one order count once); n_bought_hl* weigh each order by 2^(−age in days ÷ half-life) at T;
    first_bought_at and spend (sum of the paid lines' amounts, null when none is known) cover the same window, as
    the ranker's training summary does (`summarise_history(window_days=HISTORY_DAYS)`, the same 365 days).
    Events with an item and of type view / cart / favorite give n_view / n_cart / n_favorite and the decayed
    n_view_hl1 / n_cart_hl1 (each event weighed as above); an item only seen (never bought in the window) has its own
    row with n_bought 0, null last_bought_at / first_bought_at / spend. last_seen_at = the later of the last purchase
    and the last such event. Without an events table: event counts 0, decayed event counts null (as the summary
    gives for a store without events), last_seen_at = last_bought_at.
    category: the lines' category (the smallest when they differ), else the item catalogue's.
    """
    has_events = "events" in tables
    steps = tuple(s for s in base.steps(t, tables) if s.name == "ol" or (has_events and s.name == "ev"))
    decayed = "".join(f",\n               SUM({_decay('bought_at', t, hl)}) AS {col}"
                      for col, hl in DECAYED_ORDER_COUNTS.items())
    bought = f"""
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
    order_cols = ", ".join(f"COALESCE(b.{c}, CAST(0 AS DOUBLE)) AS {c}" for c in DECAYED_ORDER_COUNTS)
    if has_events:
        types = ", ".join(f"'{ty}'" for ty in EVENT_COUNTS.values())
        counts = "".join(f",\n               CAST(SUM(CASE WHEN type = '{ty}' THEN 1 ELSE 0 END) AS DOUBLE) AS {col}"
                         for col, ty in EVENT_COUNTS.items())
        counts += "".join(f",\n               SUM(CASE WHEN type = '{ty}' THEN {_decay('occurred_at', t, hl)} "
                          f"ELSE CAST(0 AS DOUBLE) END) AS {col}" for col, (ty, hl) in DECAYED_EVENT_COUNTS.items())
        seen = f"""
        SELECT member_id, item_id, MAX(occurred_at) AS last_event_at{counts}
        FROM ev
        WHERE item_id IS NOT NULL AND type IN ({types}) AND occurred_at >= {t} - INTERVAL {days} DAY
        GROUP BY member_id, item_id"""
        event_cols = ", ".join([f"COALESCE(e.{c}, CAST(0 AS DOUBLE)) AS {c}" for c in EVENT_COUNTS]
                               + [f"COALESCE(e.{c}, CAST(0 AS DOUBLE)) AS {c}" for c in DECAYED_EVENT_COUNTS])
        agg = f"""
        SELECT COALESCE(b.member_id, e.member_id) AS member_id, COALESCE(b.item_id, e.item_id) AS item_id,
               b.category, COALESCE(b.n_bought, CAST(0 AS BIGINT)) AS n_bought, b.last_bought_at,
               b.first_bought_at, b.spend, {order_cols}, {event_cols},
               GREATEST(b.last_bought_at, e.last_event_at) AS last_seen_at
        FROM ({bought}) b FULL OUTER JOIN ({seen}) e ON b.member_id = e.member_id AND b.item_id = e.item_id"""
    else:
        event_cols = ", ".join([f"CAST(0 AS DOUBLE) AS {c}" for c in EVENT_COUNTS]
                               + [f"CAST(NULL AS DOUBLE) AS {c}" for c in DECAYED_EVENT_COUNTS])
        agg = f"""
        SELECT b.member_id, b.item_id, b.category, b.n_bought, b.last_bought_at, b.first_bought_at, b.spend,
               {order_cols}, {event_cols}, b.last_bought_at AS last_seen_at
        FROM ({bought}) b"""
    rest = ", ".join(f"r.{c}" for c in ("n_bought", "last_bought_at", "first_bought_at", "spend",
                                        *DECAYED_ORDER_COUNTS, *EVENT_COUNTS, *DECAYED_EVENT_COUNTS,
                                        "last_seen_at"))
    item_cat = base.item_category_sql(tables)
    if item_cat is None:
        final = f"SELECT * FROM ({agg}) r ORDER BY member_id, item_id"
    else:
        final = f"""
            SELECT r.member_id, r.item_id, COALESCE(r.category, i.category) AS category, {rest}
            FROM ({agg}) r LEFT JOIN ({item_cat}) i ON r.item_id = i.item_id
            ORDER BY r.member_id, r.item_id"""
    return Plan(steps, final)
