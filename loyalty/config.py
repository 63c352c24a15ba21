"""Loyalty programme configuration (DESIGN §6): pydantic models loaded from YAML.

Every rule of the programme (tier ladder, benefits, points, segments) is data, not code. `load_config()` returns the
shipped default (the seeds' six-tier ladder); errors name the offending field and the problem.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"

Window = Literal["lifetime", "rolling_12m", "calendar_year"]


class LoyaltyConfigError(ValueError):
    """A loyalty configuration file is missing, unreadable or invalid (the message names the field)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Benefits(_Strict):
    """What a tier gives: 9折 = discount_rate 0.90, 8.5折 = 0.85; 1.0 means no discount."""

    discount_rate: float = Field(1.0, gt=0, le=1, description="price multiplier, 0.90 = 9折")
    points_multiplier: float = Field(1.0, ge=0, le=100)
    priority_shipping: bool = False
    dedicated_service: bool = False
    birthday_gift: bool = False
    member_day: bool = False
    perks: list[str] = Field(default_factory=list, description="free-text perks shown to the member")


class Tier(_Strict):
    """One rung of the ladder. A member qualifies when every condition that is set holds (AND).

    `min_spend` is inclusive (≥), `spend_above` strict (>), both in store currency over `window` (the ladder's window
    when unset). `min_interactions` counts events of `interaction_types` in the same window.
    """

    name: str = Field(min_length=1)
    min_spend: float | None = Field(None, ge=0)
    spend_above: float | None = Field(None, ge=0)
    min_orders: int | None = Field(None, ge=0)
    min_interactions: int | None = Field(None, ge=0)
    interaction_types: tuple[str, ...] = ("review", "share")
    window: Window | None = None
    benefits: Benefits = Field(default_factory=Benefits)

    @model_validator(mode="after")
    def _one_spend_bound(self) -> "Tier":
        if self.min_spend is not None and self.spend_above is not None:
            raise ValueError("set either min_spend (≥) or spend_above (>), not both")
        return self

    @property
    def uses_spend(self) -> bool:
        return self.min_spend is not None or self.spend_above is not None

    @property
    def has_conditions(self) -> bool:
        return self.uses_spend or self.min_orders is not None or self.min_interactions is not None

    def spend_threshold_cents(self) -> int | None:
        """The smallest qualifying spend in cents (strict bounds need one fen more)."""
        if self.min_spend is not None:
            return int(round(self.min_spend * 100))
        if self.spend_above is not None:
            return int(round(self.spend_above * 100)) + 1
        return None


class Downgrade(_Strict):
    """`immediate`: the tier follows qualification; `grace`: a lost tier is kept `grace_days` after qualification
    drops; `never`: the highest tier ever reached is kept."""

    policy: Literal["immediate", "grace", "never"] = "immediate"
    grace_days: int = Field(0, ge=0, le=3650)

    @model_validator(mode="after")
    def _grace_needs_days(self) -> "Downgrade":
        if self.policy == "grace" and self.grace_days <= 0:
            raise ValueError("policy 'grace' needs grace_days > 0")
        return self


class Ladder(_Strict):
    """Tiers from lowest to highest. The first tier is the entry tier and has no conditions."""

    window: Window = "lifetime"
    downgrade: Downgrade = Field(default_factory=Downgrade)
    tiers: list[Tier] = Field(min_length=1)

    @field_validator("tiers")
    @classmethod
    def _check_tiers(cls, tiers: list[Tier]) -> list[Tier]:
        names = [t.name for t in tiers]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"tier names must be unique; repeated: {dup}")
        if tiers[0].has_conditions:
            raise ValueError(f"the first tier ({tiers[0].name!r}) is the entry tier and must have no conditions")
        for i, t in enumerate(tiers[1:], start=1):
            if not t.has_conditions:
                raise ValueError(f"tier {i} ({t.name!r}) has no condition (set min_spend, spend_above, min_orders "
                                 "or min_interactions)")
        return tiers


class Activity(_Strict):
    points: int = Field(ge=0)
    max_per_day: int | None = Field(None, ge=1, description="cap per member per calendar day")
    once: bool = Field(False, description="awarded at most once per member (e.g. profile_completed)")


class Expiry(_Strict):
    months: int | None = Field(12, ge=1, le=600, description="points expire this many months after earning; null = never")


class Points(_Strict):
    """10 points per full 100 yuan paid, floored per order; category bonuses per order line; activity points."""

    points_per_unit: int = Field(10, ge=0)
    unit_amount: float = Field(100.0, gt=0, description="currency per earning unit (full units only, floor per order)")
    category_bonus: dict[str, int] = Field(default_factory=dict, description="flat points per paid line of a category")
    activities: dict[str, Activity] = Field(default_factory=dict, description="event type -> points rule")
    birthday_month_multiplier: float = Field(1.0, ge=0, le=100)
    apply_tier_multiplier: bool = True
    expiry: Expiry = Field(default_factory=Expiry)
    expiring_soon_days: int = Field(30, ge=1, le=3650)
    pending_days: int = Field(0, ge=0, le=365, description=(
        "confirmation/return window: an order's points are credited this many days after it is placed and are "
        "pending until then (a refund inside the window removes them); 0 = credited at once. The source "
        "documents say nothing about when points are credited, so the default is 0"))
    redeem_event: str = Field("redeem", description="event type whose `value` is points to redeem")

    def unit_cents(self) -> int:
        return int(round(self.unit_amount * 100))


class ValueSegments(_Strict):
    """Value segment by paid spend over the last `window_days` (orders when amounts are unknown)."""

    window_days: int = Field(365, ge=1)
    high_spend: float = Field(2000.0, ge=0)
    mid_spend: float = Field(500.0, ge=0)
    high_orders: int = Field(5, ge=1)
    mid_orders: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "ValueSegments":
        if self.mid_spend > self.high_spend:
            raise ValueError(f"mid_spend ({self.mid_spend}) must not exceed high_spend ({self.high_spend})")
        if self.mid_orders > self.high_orders:
            raise ValueError(f"mid_orders ({self.mid_orders}) must not exceed high_orders ({self.high_orders})")
        return self


class LifecycleSegments(_Strict):
    """new: joined (or first seen) within `new_days`; then by days since the last paid order:
    active ≤ `active_days` < silent ≤ `silent_days` < churned."""

    new_days: int = Field(30, ge=0)
    active_days: int = Field(90, ge=1)
    silent_days: int = Field(180, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "LifecycleSegments":
        if self.active_days > self.silent_days:
            raise ValueError(f"active_days ({self.active_days}) must not exceed silent_days ({self.silent_days})")
        return self


class Strategies(_Strict):
    """Tiered marketing of the documents, by value segment."""

    high: str = "exclusive_service"
    mid: str = "points_and_coupons"
    low: str = "content_and_recommendations"


class Segments(_Strict):
    value: ValueSegments = Field(default_factory=ValueSegments)
    lifecycle: LifecycleSegments = Field(default_factory=LifecycleSegments)
    strategy: Strategies = Field(default_factory=Strategies)


class LoyaltyConfig(_Strict):
    name: str = "default"
    currency: str = "CNY"
    member_day_of_month: int | None = Field(None, ge=1, le=28)
    member_day_discount_rate: float = Field(1.0, gt=0, le=1, description=(
        "extra price multiplier on the member day for tiers with the member_day benefit (0.95 = a further 9.5折); "
        "1.0 = no member-day price"))
    ladder: Ladder
    points: Points = Field(default_factory=Points)
    segments: Segments = Field(default_factory=Segments)

    @property
    def tier_names(self) -> list[str]:
        return [t.name for t in self.ladder.tiers]

    def tier_window(self, tier: Tier) -> Window:
        return tier.window or self.ladder.window


def format_validation_errors(exc: ValidationError) -> str:
    """One line naming each bad field and its problem (shared by every YAML config loader)."""
    parts = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


_M = TypeVar("_M", bound=BaseModel)


def validate_mapping(model: type[_M], data: object, source: str, what: str, error: type[Exception]) -> _M:
    """Validate an already-parsed YAML mapping as `model`; raise `error` naming the source and each bad field."""
    if not isinstance(data, dict):
        raise error(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(f"{source}: invalid {what}: {format_validation_errors(exc)}") from None


def read_yaml(path: Path, error: type[Exception]) -> object:
    """Parse a YAML file; raise `error` naming the file when it is not valid YAML."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from None


def parse_config(data: object, source: str = "<dict>") -> LoyaltyConfig:
    """Validate an already-parsed mapping; raise LoyaltyConfigError naming each bad field."""
    return validate_mapping(LoyaltyConfig, data, source, "loyalty config", LoyaltyConfigError)


def load_config(path: str | Path | None = None) -> LoyaltyConfig:
    """Load and validate a YAML loyalty config; `None` gives the shipped default (six-tier ladder).

    Parsed configs are cached per file version (path, modification time, size): features and serving call this
    once per request, and the YAML parse plus validation cost more than a small request's rules. The returned
    model is frozen, so sharing it is safe; an edited file is re-read."""
    p = Path(path) if path is not None else DEFAULT_CONFIG
    if not p.is_file():
        shipped = sorted(x.name for x in CONFIG_DIR.glob("*.yaml"))
        raise LoyaltyConfigError(f"loyalty config {p} does not exist (shipped configs in {CONFIG_DIR}: {shipped})")
    st = p.stat()
    return _load_version(os.path.abspath(p), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=16)
def _load_version(path: str, mtime_ns: int, size: int) -> LoyaltyConfig:
    p = Path(path)
    return parse_config(read_yaml(p, LoyaltyConfigError), str(p))


def shipped_configs() -> dict[str, Path]:
    """Name -> path of the configs shipped with the package."""
    return {p.stem: p for p in sorted(CONFIG_DIR.glob("*.yaml"))}
