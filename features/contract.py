"""The data contract (DESIGN §3) as code: one place that names every table, column, dtype and allowed value.

Column names are defined once here and imported everywhere else.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

MEMBER_ID = "member_id"
ORDER_ID = "order_id"
ITEM_ID = "item_id"
ORDERED_AT = "ordered_at"
OCCURRED_AT = "occurred_at"

STATUSES: tuple[str, ...] = ("paid", "refunded", "cancelled")
EVENT_TYPES: tuple[str, ...] = (
    "view", "cart", "favorite", "review", "share", "like", "checkin", "login",
    "profile_completed", "redeem", "coupon_received", "coupon_redeemed", "campaign_received",
)
GENDERS: tuple[str, ...] = ("F", "M", "U")


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # one of: string, datetime, float, int, bool
    required: bool = False
    default: object = None


@dataclass(frozen=True)
class TableSchema:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = field(default_factory=tuple)

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name!r} has no column {name!r}; columns: {self.names}")


MEMBERS = TableSchema(
    "members",
    (
        Column(MEMBER_ID, "string", required=True),
        Column("joined_at", "datetime"),
        Column("birthday", "datetime"),
        Column("gender", "string"),
        Column("age", "float"),
        Column("region", "string"),
        Column("channel", "string"),
        Column("marketing_consent", "bool", default=True),
    ),
    key=(MEMBER_ID,),
)

ORDERS = TableSchema(
    "orders",
    (
        Column(ORDER_ID, "string", required=True),
        Column(MEMBER_ID, "string", required=True),
        Column(ORDERED_AT, "datetime", required=True),
        Column("amount", "float", required=True),
        Column(ITEM_ID, "string"),
        Column("category", "string"),
        Column("quantity", "float", default=1.0),
        Column("discount", "float", default=0.0),
        Column("coupon_used", "bool", default=False),
        Column("status", "string", default="paid"),
    ),
)

EVENTS = TableSchema(
    "events",
    (
        Column(MEMBER_ID, "string", required=True),
        Column(OCCURRED_AT, "datetime", required=True),
        Column("type", "string", required=True),
        Column(ITEM_ID, "string"),
        Column("value", "float"),
    ),
)

ITEMS = TableSchema(
    "items",
    (
        Column(ITEM_ID, "string", required=True),
        Column("category", "string"),
        Column("price", "float"),
        Column("brand", "string"),
        Column("is_consumable", "bool"),
    ),
    key=(ITEM_ID,),
)

SCHEMAS: dict[str, TableSchema] = {s.name: s for s in (MEMBERS, ORDERS, EVENTS, ITEMS)}
TABLES: tuple[str, ...] = tuple(SCHEMAS)
REQUIRED_TABLES: tuple[str, ...] = ("orders",)

_PANDAS_DTYPES = {
    "string": "string",
    "datetime": "datetime64[us]",
    "float": "float64",
    "int": "int64",
    "bool": "boolean",
}


def pandas_dtype(col: Column) -> str:
    return _PANDAS_DTYPES[col.dtype]


def conform(df: pd.DataFrame, schema: TableSchema) -> pd.DataFrame:
    """Return `df` with exactly the schema's columns in order, typed, with defaults filled.

    Assumes values were already validated (ingestion quarantines what cannot be cast); missing optional columns
    are added with their default (or null).
    """
    out = {}
    for col in schema.columns:
        if col.name in df.columns:
            s = df[col.name]
        else:
            s = pd.Series([col.default] * len(df), index=df.index)
        if col.default is not None:
            s = s.where(s.notna(), col.default) if len(s) else s
        if col.dtype == "datetime":
            s = pd.to_datetime(s).astype("datetime64[us]")
        else:
            s = s.astype(pandas_dtype(col))
        out[col.name] = s
    return pd.DataFrame(out).reset_index(drop=True)
