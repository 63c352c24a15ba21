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
    """The order relations, three passes over the as-of order lines in all:

    - `ordg` → `rfm`: the paid orders (one row per member and order_id: time = earliest paid line) feed one
      statement that orders each member's orders in time (the window for the inter-purchase gaps) and aggregates
      everything order-based per member at once: RFM windows, trend, basket, discount, calendar counts, gaps and
      the preferred weekday / hour.
    - `refunds`: the non-paid rows (refunded / cancelled), per member, each amount in the window of its own time.
    - `catmix`: paid lines per (member, category) with the line-level sums (lines, quantity, discount), then per
      member those sums, the category entropy and the top category.

    Aggregates count with COUNT(CASE WHEN … THEN 1 END) (a BIGINT) rather than SUM(CASE … 1 ELSE 0 END), which
    DuckDB accumulates as a 128-bit integer; both give the same number over a non-empty group.
    """
    win_orders = ",\n".join(
        f"COUNT(CASE WHEN ordered_at >= {since(t, w)} THEN 1 END) AS n_orders_{w}d,\n"
        f"SUM(CASE WHEN ordered_at >= {since(t, w)} THEN value ELSE 0 END) AS gross_{w}d" for w in WINDOWS)
    win_refunds = ",\n".join(
        f"SUM(CASE WHEN status IN ('refunded', 'cancelled') AND ordered_at >= {since(t, w)} THEN amount ELSE 0 END)"
        f" AS refunded_{w}d"
        for w in WINDOWS)
    prior = f"ordered_at >= {since(t, 180)} AND ordered_at < {since(t, 90)}"

    def argmax_key(col: str, k: int) -> str:
        # the most frequent value of `col` (0..k-1), ties to the smallest: max of count*100 − value; decoded in the
        # feature expression (see `preferred`)
        counts = ", ".join(f"COUNT(CASE WHEN {col} = {i} THEN 1 END) * 100 - {i}" for i in range(k))
        return f"GREATEST({counts}) AS {col}_key"

    # paid lines per (member, category) with the line-level sums (quantity, discount, lines with an amount): one
    # pass; a line without a category takes its item's catalogue category (grouped first, keeping the item only on
    # such lines, which are rare; then the few items are looked up and the groups that meet are merged). The NULL
    # category group keeps the lines no category reaches: they count in the sums, not in the category mix.
    sums = "COUNT(*) AS n, COUNT(amount) AS n_amount, SUM(quantity) AS n_items, SUM(discount) AS discount"
    item_cat = base.item_category_sql(tables)
    if item_cat is None:
        cat_counts = f"SELECT member_id, category, {sums} FROM ol WHERE status = 'paid' GROUP BY member_id, category"
    else:
        cat_counts = f"""SELECT l.member_id, COALESCE(l.category, i.category) AS category, SUM(l.n) AS n,
                      SUM(l.n_amount) AS n_amount, SUM(l.n_items) AS n_items, SUM(l.discount) AS discount
                    FROM (SELECT member_id, category, CASE WHEN category IS NULL THEN item_id END AS cat_item, {sums}
                          FROM ol WHERE status = 'paid'
                          GROUP BY member_id, category, CASE WHEN category IS NULL THEN item_id END) l
                    LEFT JOIN ({item_cat}) i ON l.cat_item = i.item_id
                    GROUP BY l.member_id, COALESCE(l.category, i.category)"""
    return [
        # One row per (member, order_id) with at least one paid line before T: time = its earliest paid line,
        # value = the sum of its paid lines. Read once, by `rfm` (a view: never stored).
        Step("ordg", """
            SELECT g.*,
              ((DATE_DIFF('day', CAST('1970-01-05' AS DATE), CAST(ordered_at AS DATE)) % 7) + 7) % 7 AS weekday,
              HOUR(ordered_at) AS hour
            FROM (
              SELECT member_id, order_id, MIN(ordered_at) AS ordered_at, SUM(amount) AS value,
                MAX(CASE WHEN coupon_used THEN 1 ELSE 0 END) AS coupon,
                MAX(CASE WHEN discount > 0 THEN 1 ELSE 0 END) AS discounted
              FROM ol WHERE status = 'paid' GROUP BY member_id, order_id
            ) g""", view=True),
        # Inter-purchase gaps come from a window over each member's paid orders in time order, in whole seconds
        # summed exactly (count, sum, sum of squares as decimals): mean and std do not depend on row order. The gaps
        # are the differences of consecutive sorted times, so orders at equal times need no tie-break (any order of
        # the tied rows gives the same gaps, the same last gap included). The same statement aggregates every
        # order-based per-member figure.
        Step("rfm", f"""
            SELECT member_id,
              COUNT(*) AS n_orders, SUM(value) AS gross,
              {win_orders},
              COUNT(CASE WHEN {prior} THEN 1 END) AS n_orders_prior_90d,
              SUM(CASE WHEN {prior} THEN value ELSE 0 END) AS gross_prior_90d,
              MIN(ordered_at) AS first_order_at, MAX(ordered_at) AS last_order_at,
              MAX(value) AS max_value, SUM(coupon) AS n_coupon, SUM(discounted) AS n_discounted,
              COUNT(CASE WHEN hour >= 19 AND hour <= 21 THEN 1 END) AS n_evening,
              COUNT(CASE WHEN weekday >= 5 THEN 1 END) AS n_weekend,
              COUNT(gap_s) AS n_gaps, SUM(gap_s) AS gap_s1, SUM(gap_s * gap_s) AS gap_s2,
              MAX(CASE WHEN is_last = 1 THEN gap_s END) AS gap_last_s,
              {argmax_key("weekday", 7)},
              {argmax_key("hour", 24)}
            FROM (
              SELECT member_id, ordered_at, value, coupon, discounted, weekday, hour,
                CAST(DATE_DIFF('second',
                               LAG(ordered_at) OVER (PARTITION BY member_id ORDER BY ordered_at),
                               ordered_at) AS DECIMAL(18, 0)) AS gap_s,
                CASE WHEN LEAD(ordered_at) OVER (PARTITION BY member_id ORDER BY ordered_at) IS NULL
                     THEN 1 ELSE 0 END AS is_last
              FROM ordg o
            ) x GROUP BY member_id"""),
        # Refunded / cancelled rows (and any other non-paid status: such a member still belongs to the population).
        Step("refunds", f"""
            SELECT member_id,
              SUM(CASE WHEN status IN ('refunded', 'cancelled') THEN amount END) AS refunded,
              {win_refunds},
              COUNT(CASE WHEN status = 'refunded' THEN 1 END) AS n_refund_lines,
              COUNT(CASE WHEN status = 'cancelled' THEN 1 END) AS n_cancel_lines
            FROM ol WHERE status <> 'paid' GROUP BY member_id"""),
        Step("catmix", f"""
            SELECT member_id, SUM(n) AS n_lines, SUM(n_amount) AS n_amount, SUM(n_items) AS n_items,
              SUM(discount) AS discount,
              COUNT(category) AS n_categories, SUM(CASE WHEN category IS NOT NULL THEN n END) AS n_cat_lines,
              SUM(CASE WHEN category IS NOT NULL THEN CAST(ROUND(n * LN(n), 9) AS DECIMAL(38, 9)) END) AS nlogn,
              MAX(CASE WHEN category IS NOT NULL THEN n END) AS top_n,
              MAX(CASE WHEN rn = 1 THEN category END) AS top_category
            FROM (
              SELECT member_id, category, n, n_amount, n_items, discount,
                ROW_NUMBER() OVER (PARTITION BY member_id
                                   ORDER BY CASE WHEN category IS NULL THEN 1 ELSE 0 END, n DESC, category) AS rn
              FROM ({cat_counts}) c
            ) x GROUP BY member_id"""),
    ]


def preferred(key: str) -> str:
    """Decode an `argmax_key` (count*100 − value, count ≥ 1 for a member with a paid order) back to the value."""
    return f"CASE WHEN r.n_orders > 0 THEN (100 - {key} % 100) % 100 END"


def families(t: str, tables: frozenset[str]) -> list[Family]:
    s = tuple(steps(t, tables))
    has_money = "c.n_amount > 0"

    def money(expr: str) -> str:
        return f"CASE WHEN {has_money} THEN {expr} END"

    def F(name: str, expr: str, family: str, desc: str, kind: str = "numeric") -> FeatureSpec:
        return FeatureSpec(name, expr, kind, family, desc)

    rfm = [
        F("recency_days", days_since("r.last_order_at", t), "rfm", "days since the last paid order (null: none)"),
        F("orders_lifetime", "COALESCE(r.n_orders, 0)", "rfm", "paid orders before T"),
        F("spend_lifetime", money("r.gross - COALESCE(rf.refunded, 0)"), "rfm",
          "paid spend before T net of refunds/cancellations"),
    ]
    for w in WINDOWS:
        rfm += [
            F(f"orders_{w}d", f"COALESCE(r.n_orders_{w}d, 0)", "rfm", f"paid orders in the last {w} days"),
            F(f"spend_{w}d", money(f"r.gross_{w}d - COALESCE(rf.refunded_{w}d, 0)"), "rfm",
              f"spend in the last {w} days net of refunds in that window"),
        ]
    gap_mean = "CASE WHEN r.n_gaps > 0 THEN CAST(r.gap_s1 AS DOUBLE) / r.n_gaps / 86400.0 END"
    s1 = "CAST(r.gap_s1 AS DOUBLE)"
    gap_std = (f"CASE WHEN r.n_gaps > 1 THEN SQRT(GREATEST((CAST(r.gap_s2 AS DOUBLE) - {s1} * {s1} / r.n_gaps)"
               f" / (r.n_gaps - 1), 0.0)) / 86400.0 END")
    tenure_from = "COALESCE(mem.joined_at, r.first_order_at)" if "members" in tables else "r.first_order_at"
    tenure = [
        F("tenure_days", days_since(tenure_from, t), "tenure",
          "days since joining (joined_at; first paid order when unknown)"),
        F("days_since_first_order", days_since("r.first_order_at", t), "tenure", "days since the first paid order"),
    ]
    gaps = [
        F("gap_mean_days", gap_mean, "gaps", "mean days between consecutive paid orders"),
        F("gap_std_days", gap_std, "gaps", "sample std of days between consecutive paid orders"),
        F("gap_last_days", "r.gap_last_s / 86400.0", "gaps", "days between the last two paid orders"),
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
        F("items_per_order", div("c.n_items", "r.n_orders"), "basket", "mean quantity per order"),
        F("lines_per_order", div("c.n_lines", "r.n_orders"), "basket", "mean paid lines per order"),
        F("n_categories", "COALESCE(c.n_categories, 0)", "basket", "distinct categories bought"),
        F("category_entropy", "CASE WHEN c.n_cat_lines > 0 THEN LN(c.n_cat_lines) - c.nlogn / c.n_cat_lines END",
          "basket", "Shannon entropy (nats) of paid lines over categories"),
        F("top_category_share", div("c.top_n", "c.n_cat_lines"), "basket", "share of paid lines in the top category"),
        F("top_category", "c.top_category", "basket", "most-bought category (ties: alphabetical)", "categorical"),
    ]
    discount = [
        F("discount_rate", money(div("c.discount", "r.gross + c.discount")), "discount",
          "discount ÷ (paid value + discount)"),
        F("discounted_order_share", div("r.n_discounted", "r.n_orders"), "discount", "share of orders with a discount"),
        F("coupon_order_share", div("r.n_coupon", "r.n_orders"), "discount", "share of orders using a coupon"),
    ]
    refund = [
        F("refund_line_rate", div("COALESCE(rf.n_refund_lines, 0) + COALESCE(rf.n_cancel_lines, 0)", "c.n_lines"),
          "refund", "refunded + cancelled rows ÷ paid lines"),
        F("refund_amount_rate", money(div("COALESCE(rf.refunded, 0)", "r.gross")), "refund",
          "refunded + cancelled amount ÷ paid value"),
        F("n_refunds", "COALESCE(rf.n_refund_lines, 0)", "refund", "refunded rows before T"),
        F("n_cancellations", "COALESCE(rf.n_cancel_lines, 0)", "refund", "cancelled rows before T"),
    ]
    calendar = [
        F("preferred_weekday", preferred("r.weekday_key"), "calendar", "most frequent order weekday, 0 = Monday"),
        F("preferred_hour", preferred("r.hour_key"), "calendar", "most frequent order hour (0–23)"),
        F("evening_order_share", div("r.n_evening", "r.n_orders"), "calendar", "share of orders placed 19:00–21:59"),
        F("weekend_order_share", div("r.n_weekend", "r.n_orders"), "calendar", "share of orders on Sat/Sun"),
    ]
    joins = ("rfm r", "refunds rf", "catmix c") + (("mem",) if "members" in tables else ())
    none: frozenset[str] = frozenset()
    feats = tuple(rfm + tenure + gaps + trend + basket + discount + refund + calendar)
    return [Family("orders", none, s, joins, feats, population=("rfm", "refunds"))]
