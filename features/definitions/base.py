"""As-of views: the only relations the feature families read. Each keeps rows strictly before the cutoff T.

- `ol`: order lines (every status) before T, category filled from the item catalogue when the line has none.
- `ev`: events before T (when the store has events).
- `mem`: members known before T: joined_at before T, or unknown joined_at (when the store has members); one row per
  member (the earliest registration wins).
- `population`: every member known before T from any table: with an order line, an event, or a registration.
"""
from __future__ import annotations

from features.engine import Step


def steps(t: str, tables: frozenset[str]) -> list[Step]:
    if "items" in tables:
        ol_sql = f"""
            SELECT o.member_id, o.order_id, o.ordered_at, o.amount, o.item_id,
                   COALESCE(o.category, i.category) AS category,
                   o.quantity, o.discount, o.coupon_used, o.status
            FROM orders o
            LEFT JOIN (SELECT item_id, MIN(category) AS category FROM items GROUP BY item_id) i
              ON o.item_id = i.item_id
            WHERE o.ordered_at < {t}"""
    else:
        ol_sql = f"""
            SELECT member_id, order_id, ordered_at, amount, item_id, category, quantity, discount, coupon_used, status
            FROM orders WHERE ordered_at < {t}"""
    out = [Step("ol", ol_sql, view=True)]
    pop = ["SELECT member_id FROM ol"]
    if "events" in tables:
        out.append(Step("ev", f"SELECT member_id, occurred_at, type, item_id, value FROM events WHERE occurred_at < {t}", view=True))
        pop.append("SELECT member_id FROM ev")
    if "members" in tables:
        out.append(Step("mem", f"""
            SELECT member_id, joined_at, birthday, gender, age, region, channel, marketing_consent
            FROM (
              SELECT m.*, ROW_NUMBER() OVER (
                PARTITION BY member_id ORDER BY joined_at NULLS LAST, gender, region, channel, birthday, age) AS rn
              FROM members m
              WHERE m.joined_at IS NULL OR m.joined_at < {t}
            ) x WHERE rn = 1"""))
        pop.append("SELECT member_id FROM mem")
    out.append(Step("population", "SELECT DISTINCT member_id FROM (" + " UNION ALL ".join(pop) + ") u"))
    return out
