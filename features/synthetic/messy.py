"""`--messy`: turn clean tables into raw tables with a known number of bad rows per validation rule.

Each injected row is a copy of a clean row with exactly one defect, chosen so that it trips its own rule and no rule
checked before it in `features.validation.RULES` (ids blank -> missing_*; a bad timestamp string; a 2099 timestamp;
a non-numeric or negative amount / price; an unknown status; a zero or negative quantity on a paid line; an unknown
event type; an exact copy of an order line or of a member / item key placed after its original). Clean rows keep
their relative order, so validation keeps exactly the clean tables.

Raw tables are written as Parquet whose timestamp and money columns are strings (as a raw export would be).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.contract import ITEM_ID, MEMBER_ID, OCCURRED_AT, ORDER_ID, ORDERED_AT

# table -> rules injected into it. Rule ids are ingestion's (features.validation.RULES).
TABLE_RULES: dict[str, tuple[str, ...]] = {
    "orders": ("missing_order_id", "missing_member_id", "missing_item_id", "unparseable_timestamp",
               "future_timestamp", "non_numeric_amount", "negative_amount", "unknown_status", "bad_quantity",
               "duplicate_line"),
    "events": ("missing_member_id", "unparseable_timestamp", "future_timestamp", "unknown_event_type"),
    "members": ("missing_member_id", "unparseable_timestamp", "duplicate_key"),
    "items": ("missing_item_id", "negative_amount", "duplicate_key"),
}
# raw columns written as strings (so that unparseable / non-numeric values can exist)
STRING_COLUMNS: dict[str, tuple[str, ...]] = {
    "orders": (ORDERED_AT, "amount"),
    "events": (OCCURRED_AT,),
    "members": ("joined_at",),
    "items": ("price",),
}
TIME_COLUMN = {"orders": ORDERED_AT, "events": OCCURRED_AT, "members": "joined_at"}
MONEY_COLUMN = {"orders": "amount", "items": "price"}
ID_COLUMN = {"missing_order_id": ORDER_ID, "missing_member_id": MEMBER_ID, "missing_item_id": ITEM_ID}

BLANK_IDS = (None, "", "   ")
BAD_TIMESTAMPS = ("2024-02-30 10:00:00", "2025-13-01 08:00:00", "昨天晚上", "not-a-date", "31/31/2024 25:61")
BAD_AMOUNTS = ("abc", "12.5元", "免费", "--")
BAD_STATUSES = ("lost_in_transit", "待定", "pending_review")
BAD_EVENT_TYPES = ("teleport", "screenshot", "未知操作")
BAD_QUANTITIES = (0.0, -1.0, -2.0)
INJECT_SHARE = 0.0005   # per table and rule: about 0.05% of the table's rows (at least 2)


def injections_per_rule(rows: int, rng: np.random.Generator) -> int:
    """How many rows to inject for one rule: base = max(2, 0.05% of rows), plus up to half of `base` at random.

    Tiny tables (a store of fewer than ~200 members) can then exceed ingestion's default 5% bad-row limit.
    """
    base = max(2, int(round(INJECT_SHARE * rows)))
    return int(base + rng.integers(0, base + 1) // 2)


def raw_strings(table: str, tab: pa.Table) -> pa.Table:
    """Cast the table's STRING_COLUMNS to strings ('2024-06-18 20:15:33', '159.9')."""
    for c in STRING_COLUMNS[table]:
        i = tab.schema.get_field_index(c)
        col = tab.column(c)
        if pa.types.is_timestamp(col.type):
            s = pc.utf8_slice_codeunits(pc.cast(col, pa.string()), 0, 19)
        else:
            s = pc.cast(col, pa.string())
        tab = tab.set_column(i, pa.field(c, pa.string()), s)
    return tab


def _pick(rng: np.random.Generator, options: tuple, k: int) -> list:
    return [options[j] for j in rng.integers(0, len(options), k)]


def _mutate(table: str, rule: str, rows: dict[str, list], rng: np.random.Generator) -> None:
    """Give the copied rows (column -> values, strings for STRING_COLUMNS) the single defect of `rule`."""
    k = len(next(iter(rows.values())))
    if rule in ID_COLUMN:
        rows[ID_COLUMN[rule]] = _pick(rng, BLANK_IDS, k)
    elif rule == "unparseable_timestamp":
        rows[TIME_COLUMN[table]] = _pick(rng, BAD_TIMESTAMPS, k)
    elif rule == "future_timestamp":
        days = rng.integers(0, 3650, k)
        secs = rng.integers(0, 86400, k)
        ts = np.datetime64("2099-01-01T00:00:00", "s") + days.astype("timedelta64[D]") + secs.astype("timedelta64[s]")
        rows[TIME_COLUMN[table]] = [str(t).replace("T", " ") for t in ts]
    elif rule == "non_numeric_amount":
        rows[MONEY_COLUMN[table]] = _pick(rng, BAD_AMOUNTS, k)
    elif rule == "negative_amount":
        rows[MONEY_COLUMN[table]] = ["-" + v for v in rows[MONEY_COLUMN[table]]]
    elif rule == "unknown_status":
        rows["status"] = _pick(rng, BAD_STATUSES, k)
    elif rule == "bad_quantity":
        rows["quantity"] = _pick(rng, BAD_QUANTITIES, k)
    elif rule == "unknown_event_type":
        rows["type"] = _pick(rng, BAD_EVENT_TYPES, k)
    elif rule in ("duplicate_line", "duplicate_key"):
        pass  # an exact copy, placed after its original
    else:  # pragma: no cover - TABLE_RULES and this function are kept in step
        raise ValueError(f"no injection defined for rule {rule!r}")


def _eligible(table: str, rule: str, raw: pa.Table) -> np.ndarray:
    """Rows that can carry the defect without tripping another rule."""
    ok = np.ones(raw.num_rows, dtype=bool)
    if table == "orders":
        if rule == "bad_quantity":  # zero/negative quantity is only bad on a paid line
            ok &= pc.equal(raw.column("status"), "paid").to_numpy(zero_copy_only=False)
        if rule == "negative_amount":  # '-0' would parse as 0.0, not negative
            ok &= pc.greater(pc.cast(raw.column("amount"), pa.float64()), 0.0).to_numpy(zero_copy_only=False)
    if table == "items" and rule == "negative_amount":
        ok &= pc.greater(pc.cast(raw.column("price"), pa.float64()), 0.0).to_numpy(zero_copy_only=False)
    return np.flatnonzero(ok)


def inject(tables: dict[str, pa.Table], rng: np.random.Generator) -> tuple[dict[str, pa.Table], dict[str, dict[str, int]]]:
    """Raw tables with injected bad rows, and table -> rule -> count of injected rows."""
    out: dict[str, pa.Table] = {}
    counts: dict[str, dict[str, int]] = {}
    for table, rules in TABLE_RULES.items():
        raw = raw_strings(table, tables[table])
        n = raw.num_rows
        pieces, keys = [raw], [np.arange(n, dtype=np.float64)]
        counts[table] = {}
        for rule in rules:
            pool = _eligible(table, rule, raw)
            k = min(injections_per_rule(n, rng), pool.size)
            if k == 0:
                continue
            src = np.sort(rng.choice(pool, size=k, replace=False))
            rows = raw.take(pa.array(src)).to_pydict()
            _mutate(table, rule, rows, rng)
            pieces.append(pa.table(rows, schema=raw.schema))
            if rule in ("duplicate_line", "duplicate_key"):
                keys.append(src + 0.5 + rng.random(k) * (n - src - 0.5))  # somewhere after the original
            else:
                keys.append(rng.random(k) * n)
            counts[table][rule] = k
        merged = pa.concat_tables(pieces)
        order = np.argsort(np.concatenate(keys), kind="stable")
        out[table] = merged.take(pa.array(order))
    return out, counts
