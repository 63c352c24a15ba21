"""The feature and label definitions stay portable: every statement transpiles from DuckDB SQL to Spark SQL."""
from __future__ import annotations

import itertools

import pandas as pd
import pytest

from features.definitions import feature_plan
from features.definitions.labels import items_bought_plan, label_plan
from features.definitions.recent_items import recent_items_plan
from features.engine import DuckDBEngine, conform_select, make_engine, transpile_plan
from features.contract import ORDERS

T = "CAST('2024-03-01 00:00:00.000000' AS TIMESTAMP)"
OPTIONAL = ("events", "members", "items")
TABLE_SETS = [frozenset({"orders", *c}) for r in range(4) for c in itertools.combinations(OPTIONAL, r)]


@pytest.mark.parametrize("tables", TABLE_SETS, ids=lambda s: "+".join(sorted(s)))
def test_feature_plan_transpiles_to_spark(tables) -> None:
    plan = feature_plan(T, tables)
    out = transpile_plan(plan, "spark")
    assert len(out) == len(plan.steps) + 1
    assert all("read_parquet" not in s.lower() for s in out)
    # timestamps become Spark's TIMESTAMP_NTZ (no session time-zone shifts)
    assert any("TIMESTAMP_NTZ" in s for s in out)


def test_label_and_item_plans_transpile_to_spark() -> None:
    for plan in (label_plan(T, churn_horizon=90, ltv_horizon=365, timing_horizon=180), items_bought_plan(T, 30),
                 recent_items_plan(T, frozenset({"orders", "items"}))):
        assert transpile_plan(plan, "spark")
    assert transpile_plan(feature_plan(T, frozenset({"orders"})), "databricks")


def test_conform_select_fills_missing_columns_and_defaults() -> None:
    df = pd.DataFrame({"order_id": ["o1"], "member_id": [7], "ordered_at": ["2024-01-01 10:00"], "amount": [3],
                       "status": [None]})
    with DuckDBEngine() as eng:
        eng.con.register("x", df)
        got = eng.con.execute(conform_select(ORDERS, list(df.columns), "x")).df()
    assert list(got.columns) == ORDERS.names
    row = got.iloc[0]
    assert row.member_id == "7" and row.status == "paid" and row.quantity == 1.0 and not row.coupon_used
    assert row.ordered_at == pd.Timestamp("2024-01-01 10:00")


def test_make_engine_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="unknown engine"):
        make_engine("oracle")
    with pytest.raises(ValueError, match="SparkSession"):
        make_engine("spark")
