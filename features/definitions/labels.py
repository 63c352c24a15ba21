"""Label SQL at a cutoff T (DESIGN §4): everything here reads rows at or after T, inside [T, T+H), and nothing else
except the population (members with a paid order line before T).

- `churn`: 1 when the member has no paid order line in [T, T+churn_horizon).
- `ltv`: paid amount in [T, T+ltv_horizon) minus refunded/cancelled amounts whose own rows fall in that window,
  floored at 0 (a refund row is its own row at its own time, DESIGN §3).
- `days_to_next`: days (fractional) from T to the first paid order line at or after T; when none falls within
  [T, T+timing_horizon) it is censored: `days_to_next = timing_horizon`, `next_observed = 0`.
"""
from __future__ import annotations

from features.engine import Plan, Step


def label_plan(t: str, *, churn_horizon: int, ltv_horizon: int, timing_horizon: int) -> Plan:
    """Plan for the label frame at cutoff literal `t` (an SQL timestamp expression)."""
    hmax = max(churn_horizon, ltv_horizon, timing_horizon)
    population = Step("label_population", f"""
        SELECT DISTINCT member_id FROM orders
        WHERE status = 'paid' AND ordered_at < {t}""")
    future = Step("label_future", f"""
        SELECT member_id,
          SUM(CASE WHEN status = 'paid' AND ordered_at < {t} + INTERVAL {churn_horizon} DAY THEN 1 ELSE 0 END)
            AS n_paid_churn,
          SUM(CASE WHEN ordered_at < {t} + INTERVAL {ltv_horizon} DAY
                   THEN CASE WHEN status = 'paid' THEN CAST(amount AS DECIMAL(18, 4))
                             ELSE -CAST(amount AS DECIMAL(18, 4)) END ELSE 0 END) AS ltv_net,
          MIN(CASE WHEN status = 'paid' THEN ordered_at END) AS next_paid_at
        FROM orders
        WHERE ordered_at >= {t} AND ordered_at < {t} + INTERVAL {hmax} DAY
        GROUP BY member_id""")
    observed = f"f.next_paid_at IS NOT NULL AND f.next_paid_at < {t} + INTERVAL {timing_horizon} DAY"
    final = f"""
        SELECT p.member_id,
          CAST(CASE WHEN COALESCE(f.n_paid_churn, 0) = 0 THEN 1 ELSE 0 END AS BIGINT) AS churn,
          CAST(GREATEST(COALESCE(f.ltv_net, 0.0), 0.0) AS DOUBLE) AS ltv,
          CAST(CASE WHEN {observed} THEN DATE_DIFF('second', {t}, f.next_paid_at) / 86400.0
                    ELSE {float(timing_horizon)} END AS DOUBLE) AS days_to_next,
          CAST(CASE WHEN {observed} THEN 1 ELSE 0 END AS BIGINT) AS next_observed
        FROM label_population p LEFT JOIN label_future f ON p.member_id = f.member_id
        ORDER BY p.member_id"""
    return Plan((population, future), final)


def items_bought_plan(t: str, horizon_days: int) -> Plan:
    """Items bought in [T, T+H): one row per (member, item) with the number of paid order lines."""
    final = f"""
        SELECT member_id, item_id, CAST(COUNT(*) AS BIGINT) AS n
        FROM orders
        WHERE status = 'paid' AND item_id IS NOT NULL
          AND ordered_at >= {t} AND ordered_at < {t} + INTERVAL {horizon_days} DAY
        GROUP BY member_id, item_id
        ORDER BY member_id, item_id"""
    return Plan((), final)


def data_end_sql() -> str:
    """Last order timestamp in the store (labels need their whole window observed)."""
    return "SELECT MAX(ordered_at) AS data_end, COUNT(amount) AS n_amount FROM orders"
