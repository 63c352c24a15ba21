"""Request and response models of the online service (validated once, at the edge).

Every rule a request can break is checked here, so a bad request gets a 400 naming the field and the problem
(BentoML turns a pydantic ValidationError into `{"error": ..., "detail": [{"loc": [...], "msg": ...}]}`) before any
feature or model code runs. Histories must be in time order: out-of-order rows are most often a client bug
(concatenated pages, a wrong sort key), so they are refused rather than silently re-sorted.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from features.contract import EVENT_TYPES, GENDERS, STATUSES

MAX_ROWS = 20_000          # order lines + events in one inline history (also bounded by the body-size limit)
MAX_TOP_N = 100
ID = Field(min_length=1, max_length=128)


def openapi30(node: Any) -> Any:
    """Rewrite a pydantic (JSON Schema 2020-12) schema into the OpenAPI 3.0 dialect BentoML declares
    (`openapi: 3.0.2`): `anyOf [X, null]` → X with `nullable: true`, numeric `exclusiveMinimum/Maximum` → `minimum`
    + boolean flag, `const` → one-value `enum`. Without it, clients and fuzzers that read the document as 3.0
    (schemathesis) reject the request schemas as invalid."""
    if isinstance(node, list):
        return [openapi30(x) for x in node]
    if not isinstance(node, dict):
        return node
    node = {k: openapi30(v) for k, v in node.items()}
    for bound, flag in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        v = node.get(flag)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            node[bound] = node.pop(flag)
            node[flag] = True
    any_of = node.get("anyOf")
    if isinstance(any_of, list) and {"type": "null"} in any_of:
        rest = [x for x in any_of if x != {"type": "null"}]
        del node["anyOf"]
        if len(rest) == 1 and "$ref" in rest[0]:
            node["allOf"] = rest
        elif len(rest) == 1:
            node = {**rest[0], **node}
        else:
            node["anyOf"] = rest
        node["nullable"] = True
    if "const" in node:
        node["enum"] = [node.pop("const")]
    return node


class _OpenAPI30(BaseModel):
    """Base of every request/response model: its JSON schema is emitted in OpenAPI 3.0 form (see `openapi30`)."""

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return openapi30(super().model_json_schema(*args, **kwargs))


class _In(_OpenAPI30):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _naive_utc(v: dt.datetime) -> dt.datetime:
    """Timestamps are compared as naive UTC (the contract's datetime64[us])."""
    if v.tzinfo is not None:
        v = v.astimezone(dt.UTC).replace(tzinfo=None)
    return v


class OrderLine(_In):
    """One order line (contract table `orders`); refunds/cancellations are their own rows at their own time."""

    order_id: str = ID
    ordered_at: dt.datetime
    amount: float = Field(ge=0, allow_inf_nan=False, description="paid amount, ≥ 0, store currency")
    item_id: str | None = Field(None, max_length=128)
    category: str | None = Field(None, max_length=128)
    quantity: float = Field(1.0, gt=0, le=1e6, allow_inf_nan=False)
    discount: float = Field(0.0, ge=0, allow_inf_nan=False)
    coupon_used: bool = False
    status: Literal[STATUSES] = "paid"  # type: ignore[valid-type]

    _utc = field_validator("ordered_at")(_naive_utc)


class Event(_In):
    """One interaction (contract table `events`)."""

    occurred_at: dt.datetime
    type: Literal[EVENT_TYPES]  # type: ignore[valid-type]
    item_id: str | None = Field(None, max_length=128)
    value: float | None = Field(None, allow_inf_nan=False)

    _utc = field_validator("occurred_at")(_naive_utc)


class Profile(_In):
    """Registration data (contract table `members`), all optional."""

    joined_at: dt.datetime | None = None
    birthday: dt.date | None = None
    gender: Literal[GENDERS] | None = None  # type: ignore[valid-type]
    age: float | None = Field(None, ge=0, le=130, allow_inf_nan=False)
    region: str | None = Field(None, max_length=64)
    channel: str | None = Field(None, max_length=64)
    marketing_consent: bool = True

    @field_validator("joined_at")
    @classmethod
    def _utc(cls, v: dt.datetime | None) -> dt.datetime | None:
        return None if v is None else _naive_utc(v)


EXAMPLE_HISTORY: dict[str, Any] = {
    "member_id": "demo-1",
    "as_of": "2024-07-01T00:00:00",
    "orders": [
        {"order_id": "o1", "ordered_at": "2024-03-02T10:15:00", "amount": 268.0, "item_id": "I0012",
         "category": "美妆"},
        {"order_id": "o2", "ordered_at": "2024-05-20T21:03:00", "amount": 899.0, "item_id": "I0420",
         "category": "数码"},
        {"order_id": "o3", "ordered_at": "2024-06-18T09:30:00", "amount": 129.5, "item_id": "I0012",
         "category": "美妆"},
    ],
    "events": [{"occurred_at": "2024-06-20T08:00:00", "type": "checkin"}],
    "profile": {"joined_at": "2023-11-11T00:00:00", "birthday": "1992-07-15", "gender": "F", "region": "浙江"},
}


class History(_In):
    """A member's own history, sent inline: order lines and events in time order, optionally a profile.

    `as_of` is the scoring time (default: now, UTC): every row must be strictly before it (point-in-time).
    """

    model_config = ConfigDict(json_schema_extra={"example": EXAMPLE_HISTORY})

    member_id: str = ID
    as_of: dt.datetime | None = None
    orders: list[OrderLine] = Field(default_factory=list, max_length=MAX_ROWS)
    events: list[Event] = Field(default_factory=list, max_length=MAX_ROWS)
    profile: Profile | None = None

    _utc = field_validator("as_of")(lambda v: None if v is None else _naive_utc(v))

    @model_validator(mode="after")
    def _time_order(self) -> "History":
        as_of = self.as_of or dt.datetime.now(dt.UTC).replace(tzinfo=None)
        for name, rows, key in (("orders", self.orders, "ordered_at"), ("events", self.events, "occurred_at")):
            prev = None
            for i, row in enumerate(rows):
                t = getattr(row, key)
                if prev is not None and t < prev:
                    raise ValueError(f"{name}[{i}].{key}: {t.isoformat()} is earlier than {name}[{i - 1}].{key} "
                                     f"({prev.isoformat()}); send the history in time order")
                if t >= as_of:
                    raise ValueError(f"{name}[{i}].{key}: {t.isoformat()} is not before as_of ({as_of.isoformat()}); "
                                     "only rows strictly before the scoring time are used")
                prev = t
        if len(self.orders) + len(self.events) > MAX_ROWS:
            raise ValueError(f"orders + events: {len(self.orders) + len(self.events)} rows, the limit is {MAX_ROWS}")
        if not self.orders and not self.events and self.profile is None:
            raise ValueError("orders, events, profile: the history is empty; send at least one of them")
        return self

    def scoring_time(self) -> dt.datetime:
        return self.as_of or dt.datetime.now(dt.UTC).replace(tzinfo=None)


class _MemberOrHistory(_In):
    member_id: str | None = Field(None, min_length=1, max_length=128,
                                  description="look the member up in the online feature table")
    history: History | None = Field(None, description="or send the member's history inline")

    @model_validator(mode="after")
    def _exactly_one(self) -> "_MemberOrHistory":
        if (self.member_id is None) == (self.history is None):
            raise ValueError("member_id, history: send exactly one of them")
        return self


class ScoreRequest(_MemberOrHistory):
    """Score one member: by id (online features) or by inline history (features computed on the spot)."""

    model_config = ConfigDict(json_schema_extra={"example": {"member_id": "M000001", "top_n": 5}})

    top_n: int = Field(10, ge=1, le=MAX_TOP_N, description="number of recommendations")


class RecommendRequest(_MemberOrHistory):
    """Top-N recommendations for one member, optionally without some categories."""

    model_config = ConfigDict(json_schema_extra={"example": {"member_id": "M000001", "n": 5,
                                                           "exclude_categories": ["数码"]}})

    n: int = Field(10, ge=1, le=MAX_TOP_N)
    exclude_categories: list[str] = Field(default_factory=list, max_length=100)


class CartLineIn(_In):
    item_id: str | None = Field(None, max_length=128)
    category: str | None = Field(None, max_length=128)
    price: float = Field(ge=0, le=1e9, allow_inf_nan=False, description="unit price before the member discount")
    quantity: float = Field(1.0, gt=0, le=1e6, allow_inf_nan=False)


class QuoteRequest(_MemberOrHistory):
    """Quote a cart for a member: price after the tier discount and the points it earns."""

    model_config = ConfigDict(json_schema_extra={"example": (
        {"member_id": "M000001", "cart": [{"item_id": "I0012", "category": "美妆", "price": 129.5, "quantity": 2}]})})

    cart: list[CartLineIn] = Field(min_length=1, max_length=1000)
    at: dt.datetime | None = Field(None, description="when the order would be placed (default: now)")


class TierRequest(_In):
    """Loyalty rules only, from an inline history."""

    model_config = ConfigDict(json_schema_extra={"example": {"history": EXAMPLE_HISTORY}})

    history: History


# ---------------------------------------------------------------------------------------------------- responses

class Benefits(_OpenAPI30):
    discount_rate: float
    points_multiplier: float
    priority_shipping: bool
    dedicated_service: bool
    birthday_gift: bool
    member_day: bool


class Loyalty(_OpenAPI30):
    """Tier, benefits, points and segments by the shop's rules (loyalty package)."""

    tier: str | None
    tier_rank: int | None
    next_tier: str | None
    spend_to_next_tier: float | None
    benefits: Benefits | None
    points_balance: int | None
    points_expiring_30d: int | None
    value_segment: str | None
    lifecycle_segment: str | None
    strategy: str | None = None


class TierResponse(_OpenAPI30):
    member_id: str
    as_of: dt.datetime
    loyalty: Loyalty


class Churn(_OpenAPI30):
    probability: float
    reasons: list[str]


class Ltv(_OpenAPI30):
    value: float = Field(description="expected paid spend over the model's horizon, store currency")


class NextPurchase(_OpenAPI30):
    probability_within_days: dict[str, float] = Field(description="P(next order within d days), by d")
    median_days: float | None
    expected_days: float | None
    expected_date: dt.date | None


class Recommendation(_OpenAPI30):
    rank: int
    item_id: str
    score: float
    reason: str


class ScoreResponse(_OpenAPI30):
    member_id: str
    as_of: dt.datetime
    source: Literal["online_table", "inline_history"]
    loyalty: Loyalty | None
    churn: Churn | None
    ltv: Ltv | None
    next_purchase: NextPurchase | None
    recommendations: list[Recommendation] | None
    model_versions: dict[str, str] = Field(description="registered model → version used")
    unavailable: dict[str, str] = Field(default_factory=dict,
                                        description="part of the answer that could not be given → why")


class RecommendResponse(_OpenAPI30):
    member_id: str
    as_of: dt.datetime
    recommendations: list[Recommendation]
    model_version: str


class QuoteResponse(_OpenAPI30):
    member_id: str
    tier: str | None
    subtotal: float
    discount_rate: float
    total: float
    savings: float
    base_points: int
    bonus_points: int
    multiplier: float
    points: int
    reasons: list[str]


class ErrorResponse(_OpenAPI30):
    error: str
    field: str | None = None
