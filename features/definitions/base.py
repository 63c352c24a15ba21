"""As-of views: the only relations the feature families read. Each keeps rows strictly before the cutoff T.

- `ol`: order lines (every status) before T (a line without a category takes its item's catalogue category where
  a family needs categories: see `item_category_sql`).
- `ev`: events before T (when the store has events).
- `mem`: members known before T: joined_at before T, or unknown joined_at (when the store has members); one row per
  member (the earliest registration wins).

The population (every member known before T from any table: an order line of any status, an event, or a
registration) is assembled by `feature_plan` from the per-member relations of the families.
"""
from __future__ import annotations

from features.engine import Step

# Money and quantities are summed as exact decimals (4 places): a float SUM depends on the order rows arrive in,
# which a parallel engine does not fix, and features must be bit-for-bit reproducible (training runs, the gate).
MONEY = "CAST({} AS DECIMAL(18, 4))"


def steps(t: str, tables: frozenset[str]) -> list[Step]:
    """The as-of views. `population` is not here: feature_plan builds it from the per-member family relations."""
    out = [Step("ol", f"""
            SELECT member_id, order_id, ordered_at, {MONEY.format("amount")} AS amount, item_id, category,
                   {MONEY.format("quantity")} AS quantity, {MONEY.format("discount")} AS discount, coupon_used, status
            FROM orders WHERE ordered_at < {t}""", view=True)]
    if "events" in tables:
        out.append(Step("ev", f"SELECT member_id, occurred_at, type, item_id, value FROM events WHERE occurred_at < {t}",
                        view=True))
    if "members" in tables:
        out.append(Step("mem", f"""
            SELECT member_id, joined_at, birthday, gender, age, region, channel, marketing_consent
            FROM (
              SELECT m.*, ROW_NUMBER() OVER (
                PARTITION BY member_id ORDER BY joined_at NULLS LAST, gender, region, channel, birthday, age) AS rn
              FROM members m
              WHERE m.joined_at IS NULL OR m.joined_at < {t}
            ) x WHERE rn = 1"""))
    return out


def item_category_sql(tables: frozenset[str]) -> str | None:
    """One category per item from the catalogue (when there is one), for lines that carry none."""
    if "items" not in tables:
        return None
    return "SELECT item_id, MIN(category) AS category FROM items WHERE category IS NOT NULL GROUP BY item_id"
