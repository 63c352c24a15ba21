"""Order-based feature families: RFM, tenure, inter-purchase gaps, trend, basket and category mix, discount and coupon
sensitivity, refund rate, order-time calendar.

Definitions used throughout:
- an *order* is a distinct (member_id, order_id) with at least one paid line before T; its time is its earliest
  paid line; its value is the sum of its paid lines' amounts.
- *spend* (monetary) is paid value minus the amounts of refunded/cancelled rows, each row counted in the window
  of its own timestamp. A member whose paid lines carry no amount (e.g. Taobao UserBehavior) gets null monetary
  features, never an invented 0.
- window `w` days means [T − w days, T).
"""
from __future__ import annotations

from features.definitions import WINDOWS, Family, FeatureSpec, base
from features.engine import Step


def div(a: str, b: str) -> str:
    """Float division that gives NULL (not an error or inf) when the denominator is 0 or NULL."""
    return f"CAST({a} AS DOUBLE) / NULLIF({b}, 0)"


def days_since(ts: str, t: str) -> str:
    return f"DATE_DIFF('second', {ts}, {t}) / 86400.0"


def since(t: str, days: int) -> str:
    return f"{t} - INTERVAL {days} DAY"


def steps(t: str, tables: frozenset[str]) -> list[Step]:
    win_orders = ",\n".join(
        f"SUM(CASE WHEN ordered_at >= {since(t, w)} THEN 1 ELSE 0 END) AS n_orders_{w}d,\n"
        f"SUM(CASE WHEN ordered_at >= {since(t, w)} THEN value ELSE 0 END) AS gross_{w}d,\n"
        f"SUM(refunded_{w}d) AS refunded_{w}d" for w in WINDOWS)
    win_refunds = ",\n".join(
        f"SUM(CASE WHEN status IN ('refunded', 'cancelled') AND ordered_at >= {since(t, w)} THEN amount ELSE 0 END)"
        f" AS refunded_{w}d"
        for w in WINDOWS)
    prior = f"ordered_at >= {since(t, 180)} AND ordered_at < {since(t, 90)}"
    item_cat = base.item_category_sql(tables)
    cat_expr, cat_join = ("o.category", "") if item_cat is None else (
        "COALESCE(o.category, i.category)", f"LEFT JOIN ({item_cat}) i ON o.item_id = i.item_id")
    return [
        # One row per (member, order_id) seen before T, in one pass over the order lines: the paid part (time =
        # earliest paid line, NULL when the order has no paid line before T) and its refund/cancel rows, each
        # counted in the window of its own timestamp.
        Step("ordg", f"""
            SELECT g.*,
              ((DATE_DIFF('day', CAST('1970-01-05' AS DATE), CAST(ordered_at AS DATE)) % 7) + 7) % 7 AS weekday,
              HOUR(ordered_at) AS hour
            FROM (
              SELECT member_id, order_id,
                MIN(CASE WHEN status = 'paid' THEN ordered_at END) AS ordered_at,
                SUM(CASE WHEN status = 'paid' THEN amount END) AS value,
                SUM(CASE WHEN status = 'paid' AND amount IS NOT NULL THEN 1 ELSE 0 END) AS n_amount,
                SUM(CASE WHEN status = 'paid' THEN 1 ELSE 0 END) AS n_lines,
                SUM(CASE WHEN status = 'paid' THEN quantity ELSE 0 END) AS n_items,
                SUM(CASE WHEN status = 'paid' THEN discount ELSE 0 END) AS discount,
                MAX(CASE WHEN status = 'paid' AND coupon_used THEN 1 ELSE 0 END) AS coupon,
                MAX(CASE WHEN status = 'paid' AND discount > 0 THEN 1 ELSE 0 END) AS discounted,
                SUM(CASE WHEN status IN ('refunded', 'cancelled') THEN amount END) AS refunded,
                {win_refunds},
                SUM(CASE WHEN status = 'refunded' THEN 1 ELSE 0 END) AS n_refund_lines,
                SUM(CASE WHEN status = 'cancelled' THEN 1 ELSE 0 END) AS n_cancel_lines
              FROM ol GROUP BY member_id, order_id
            ) g"""),
        # Inter-purchase gaps: a window over a narrow relation (member, time, order_id) of the paid orders, in
        # time order (order_id breaks ties, so "the last gap" is deterministic). Whole seconds, summed exactly
        # (count, sum, sum of squares as decimals): mean and std do not depend on row order.
        Step("gaps", """
            SELECT member_id, COUNT(gap_s) AS n_gaps, SUM(gap_s) AS s1, SUM(gap_s * gap_s) AS s2,
              MAX(CASE WHEN is_last = 1 THEN gap_s END) AS gap_last_s
            FROM (
              SELECT member_id,
                CAST(DATE_DIFF('second',
                               LAG(ordered_at) OVER (PARTITION BY member_id ORDER BY ordered_at, order_id),
                               ordered_at) AS DECIMAL(18, 0)) AS gap_s,
                CASE WHEN LEAD(ordered_at) OVER (PARTITION BY member_id ORDER BY ordered_at, order_id) IS NULL
                     THEN 1 ELSE 0 END AS is_last
              FROM ordg WHERE ordered_at IS NOT NULL
            ) x GROUP BY member_id"""),
        Step("rfm", f"""
            SELECT member_id,
              COUNT(ordered_at) AS n_orders, SUM(n_amount) AS n_amount, SUM(value) AS gross,
              {win_orders},
              SUM(CASE WHEN {prior} THEN 1 ELSE 0 END) AS n_orders_prior_90d,
              SUM(CASE WHEN {prior} THEN value ELSE 0 END) AS gross_prior_90d,
              MIN(ordered_at) AS first_order_at, MAX(ordered_at) AS last_order_at,
              SUM(n_items) AS n_items, SUM(n_lines) AS n_lines, MAX(value) AS max_value,
              SUM(discount) AS discount, SUM(coupon) AS n_coupon, SUM(discounted) AS n_discounted,
              SUM(CASE WHEN hour >= 19 AND hour <= 21 THEN 1 ELSE 0 END) AS n_evening,
              SUM(CASE WHEN weekday >= 5 THEN 1 ELSE 0 END) AS n_weekend,
              SUM(refunded) AS refunded,
              SUM(n_refund_lines) AS n_refund_lines, SUM(n_cancel_lines) AS n_cancel_lines
            FROM ordg GROUP BY member_id"""),
        Step("catmix", f"""
            SELECT member_id, COUNT(*) AS n_categories, SUM(n) AS n_cat_lines,
              SUM(CAST(ROUND(n * LN(n), 9) AS DECIMAL(38, 9))) AS nlogn,
              MAX(n) AS top_n, MAX(CASE WHEN rn = 1 THEN category END) AS top_category
            FROM (
              SELECT member_id, category, n,
                ROW_NUMBER() OVER (PARTITION BY member_id ORDER BY n DESC, category) AS rn
              FROM (SELECT o.member_id, {cat_expr} AS category, COUNT(*) AS n
                    FROM ol o {cat_join}
                    WHERE o.status = 'paid' AND {cat_expr} IS NOT NULL
                    GROUP BY o.member_id, {cat_expr}) c
            ) x GROUP BY member_id"""),
        # Most frequent weekday / hour; ties go to the smallest value (MAX_BY on count*100 − value).
        Step("pref", """
            SELECT w.member_id, w.preferred_weekday, h.preferred_hour
            FROM (SELECT member_id, ARG_MAX(weekday, n * 100 - weekday) AS preferred_weekday
                  FROM (SELECT member_id, weekday, COUNT(*) AS n FROM ordg WHERE ordered_at IS NOT NULL
                        GROUP BY member_id, weekday) a GROUP BY member_id) w
            JOIN (SELECT member_id, ARG_MAX(hour, n * 100 - hour) AS preferred_hour
                  FROM (SELECT member_id, hour, COUNT(*) AS n FROM ordg WHERE ordered_at IS NOT NULL
                        GROUP BY member_id, hour) b GROUP BY member_id) h
            ON w.member_id = h.member_id"""),
    ]


def families(t: str, tables: frozenset[str]) -> list[Family]:
    s = tuple(steps(t, tables))
    has_money = "r.n_amount > 0"

    def money(expr: str) -> str:
        return f"CASE WHEN {has_money} THEN {expr} END"

    def F(name: str, expr: str, family: str, desc: str, kind: str = "numeric") -> FeatureSpec:
        return FeatureSpec(name, expr, kind, family, desc)

    rfm = [
        F("recency_days", days_since("r.last_order_at", t), "rfm", "days since the last paid order (null: none)"),
        F("orders_lifetime", "COALESCE(r.n_orders, 0)", "rfm", "paid orders before T"),
        F("spend_lifetime", money("r.gross - COALESCE(r.refunded, 0)"), "rfm",
          "paid spend before T net of refunds/cancellations"),
    ]
    for w in WINDOWS:
        rfm += [
            F(f"orders_{w}d", f"COALESCE(r.n_orders_{w}d, 0)", "rfm", f"paid orders in the last {w} days"),
            F(f"spend_{w}d", money(f"r.gross_{w}d - COALESCE(r.refunded_{w}d, 0)"), "rfm",
              f"spend in the last {w} days net of refunds in that window"),
        ]
    gap_mean = "CASE WHEN gp.n_gaps > 0 THEN CAST(gp.s1 AS DOUBLE) / gp.n_gaps / 86400.0 END"
    s1 = "CAST(gp.s1 AS DOUBLE)"
    gap_std = (f"CASE WHEN gp.n_gaps > 1 THEN SQRT(GREATEST((CAST(gp.s2 AS DOUBLE) - {s1} * {s1} / gp.n_gaps)"
               f" / (gp.n_gaps - 1), 0.0)) / 86400.0 END")
    tenure_from = "COALESCE(mem.joined_at, r.first_order_at)" if "members" in tables else "r.first_order_at"
    tenure = [
        F("tenure_days", days_since(tenure_from, t), "tenure",
          "days since joining (joined_at; first paid order when unknown)"),
        F("days_since_first_order", days_since("r.first_order_at", t), "tenure", "days since the first paid order"),
    ]
    gaps = [
        F("gap_mean_days", gap_mean, "gaps", "mean days between consecutive paid orders"),
        F("gap_std_days", gap_std, "gaps", "sample std of days between consecutive paid orders"),
        F("gap_last_days", "gp.gap_last_s / 86400.0", "gaps", "days between the last two paid orders"),
        F("recency_over_gap", div(days_since("r.last_order_at", t), gap_mean), "gaps",
          "recency ÷ mean gap (> 1: overdue)"),
    ]
    trend = [
        F("orders_prior_90d", "COALESCE(r.n_orders_prior_90d, 0)", "trend", "paid orders in [T−180d, T−90d)"),
        F("orders_trend", div("r.n_orders_90d - r.n_orders_prior_90d", "r.n_orders_90d + r.n_orders_prior_90d"),
          "trend", "(last 90d − prior 90d) ÷ (sum) of orders, in [−1, 1]"),
        F("spend_trend", money(div("r.gross_90d - r.gross_prior_90d", "r.gross_90d + r.gross_prior_90d")),
          "trend", "(last 90d − prior 90d) ÷ (sum) of gross paid value, in [−1, 1]"),
    ]
    basket = [
        F("avg_order_value", money(div("r.gross", "r.n_orders")), "basket", "mean paid value per order"),
        F("max_order_value", money("r.max_value"), "basket", "largest paid order value"),
        F("items_per_order", div("r.n_items", "r.n_orders"), "basket", "mean quantity per order"),
        F("lines_per_order", div("r.n_lines", "r.n_orders"), "basket", "mean paid lines per order"),
        F("n_categories", "COALESCE(c.n_categories, 0)", "basket", "distinct categories bought"),
        F("category_entropy", "CASE WHEN c.n_cat_lines > 0 THEN LN(c.n_cat_lines) - c.nlogn / c.n_cat_lines END",
          "basket", "Shannon entropy (nats) of paid lines over categories"),
        F("top_category_share", div("c.top_n", "c.n_cat_lines"), "basket", "share of paid lines in the top category"),
        F("top_category", "c.top_category", "basket", "most-bought category (ties: alphabetical)", "categorical"),
    ]
    discount = [
        F("discount_rate", money(div("r.discount", "r.gross + r.discount")), "discount",
          "discount ÷ (paid value + discount)"),
        F("discounted_order_share", div("r.n_discounted", "r.n_orders"), "discount", "share of orders with a discount"),
        F("coupon_order_share", div("r.n_coupon", "r.n_orders"), "discount", "share of orders using a coupon"),
    ]
    refund = [
        F("refund_line_rate", div("COALESCE(r.n_refund_lines, 0) + COALESCE(r.n_cancel_lines, 0)", "r.n_lines"),
          "refund", "refunded + cancelled rows ÷ paid lines"),
        F("refund_amount_rate", money(div("COALESCE(r.refunded, 0)", "r.gross")), "refund",
          "refunded + cancelled amount ÷ paid value"),
        F("n_refunds", "COALESCE(r.n_refund_lines, 0)", "refund", "refunded rows before T"),
        F("n_cancellations", "COALESCE(r.n_cancel_lines, 0)", "refund", "cancelled rows before T"),
    ]
    calendar = [
        F("preferred_weekday", "pf.preferred_weekday", "calendar", "most frequent order weekday, 0 = Monday"),
        F("preferred_hour", "pf.preferred_hour", "calendar", "most frequent order hour (0–23)"),
        F("evening_order_share", div("r.n_evening", "r.n_orders"), "calendar", "share of orders placed 19:00–21:59"),
        F("weekend_order_share", div("r.n_weekend", "r.n_orders"), "calendar", "share of orders on Sat/Sun"),
    ]
    joins = ("rfm r", "gaps gp", "catmix c", "pref pf") + (("mem",) if "members" in tables else ())
    none: frozenset[str] = frozenset()
    feats = tuple(rfm + tenure + gaps + trend + basket + discount + refund + calendar)
    return [Family("orders", none, s, joins, feats, population=("rfm",))]
