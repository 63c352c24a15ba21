"""Campaign configuration: pydantic models loaded from YAML (shipped defaults: serving/campaigns/audiences.yaml).

A campaign is a list of audiences, each of a *kind* with its own rule parameters (win_back, replenishment,
tier_upgrade, points_expiry, birthday, onboarding, content_recs), a priority (lower goes first: with `exclusive`, a
member lands only in the first audience that wants them), an optional cap (the top members by the audience's
ranking), a control share (the seeded random holdout) and offers by tier strategy (the documents' tiered marketing:
high value → exclusive service, mid → points and coupons, low → content and recommendations).
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from loyalty.config import read_yaml, validate_mapping

DEFAULT_AUDIENCES = Path(__file__).resolve().parent / "audiences.yaml"
STRATEGIES = ("exclusive_service", "points_and_coupons", "content_and_recommendations")


class CampaignConfigError(ValueError):
    """The campaign YAML is missing or invalid (the message names the field)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Offer(_Strict):
    """What the member is offered, in plain words, and what it costs the shop (for ROI)."""

    text: str = Field(min_length=1)
    cost_per_member: float = Field(0.0, ge=0, description="cost of each treated contact (message, gift), currency")
    cost_per_conversion: float = Field(0.0, ge=0, description="cost when a treated member buys (coupon value)")


class _Audience(_Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")
    priority: int = Field(100, description="lower goes first when a member qualifies for several audiences")
    cap: int | None = Field(None, ge=1, description="at most this many members (the top by the ranking)")
    control_share: float | None = Field(None, ge=0, lt=1, description="random holdout; default: the campaign's")
    enabled: bool = True
    offers: dict[str, Offer] = Field(default_factory=dict, description="tier strategy (or 'default') → offer")

    @field_validator("offers")
    @classmethod
    def _known_strategies(cls, v: dict[str, Offer]) -> dict[str, Offer]:
        bad = sorted(set(v) - set(STRATEGIES) - {"default"})
        if bad:
            raise ValueError(f"unknown strategy key(s) {bad}; use {list(STRATEGIES)} or 'default'")
        return v


class WinBack(_Audience):
    """Members likely to leave who are worth keeping: value at risk = churn probability × LTV, highest first."""

    kind: Literal["win_back"]
    min_churn_probability: float = Field(0.5, ge=0, le=1)
    min_value_at_risk: float = Field(0.0, ge=0)
    lifecycle: list[str] = Field(default_factory=lambda: ["active", "silent", "churned"])


class Replenishment(_Audience):
    """A category the member buys on a regular cycle is due within `due_within_days` (or overdue by a few days)."""

    kind: Literal["replenishment"]
    due_within_days: float = Field(7.0, gt=0)
    overdue_grace_days: float = Field(3.0, ge=0)


class TierUpgrade(_Audience):
    """Members within `within_share` of the next tier's threshold: the spend still needed is in the message."""

    kind: Literal["tier_upgrade"]
    within_share: float = Field(0.2, gt=0, le=1)
    min_spend_to_next: float = Field(0.0, ge=0)


class PointsExpiry(_Audience):
    """Members with at least `min_points` points expiring within 30 days."""

    kind: Literal["points_expiry"]
    min_points: int = Field(100, ge=1)


class Birthday(_Audience):
    """Members whose birthday falls in the month of the send date (birthday-month points multiplier, gift)."""

    kind: Literal["birthday"]


class Onboarding(_Audience):
    """New members who have not completed their profile: points for completing it (document 000: 100 points)."""

    kind: Literal["onboarding"]
    lifecycle: list[str] = Field(default_factory=lambda: ["new"])
    profile_points: int = Field(100, ge=0)


class ContentRecs(_Audience):
    """Low-value members: content and recommendations (the documents' strategy for the low tier)."""

    kind: Literal["content_recs"]
    value_segments: list[str] = Field(default_factory=lambda: ["low"])
    min_recommendations: int = Field(1, ge=0)


Audience = Annotated[WinBack | Replenishment | TierUpgrade | PointsExpiry | Birthday | Onboarding | ContentRecs,
                     Field(discriminator="kind")]


class CampaignConfig(_Strict):
    """The whole campaign: send date, holdout, send hours, default offers and the audiences."""

    name: str = "campaign"
    send_date: dt.date | None = Field(None, description="default: the scores' as_of date")
    seed: int = Field(0, description="seeds the control holdout (same seed, same groups)")
    control_share: float = Field(0.10, ge=0, lt=1)
    exclusive: bool = Field(True, description="a member lands in at most one audience (the highest priority)")
    require_known_consent: bool = Field(
        False, description="also skip members whose consent is unknown (no members row); the contract's default "
                           "for a missing marketing_consent is true")
    default_send_hour: int = Field(20, ge=0, le=23, description="documents' example: office workers at 19–21h")
    min_actions_for_hour: int = Field(5, ge=1, description="actions needed before a member's own peak hour is used")
    n_items: int = Field(3, ge=0, le=20, description="recommended items per row")
    currency: str = "¥"
    measure_days: int = Field(14, ge=1, le=365, description="outcome window after the send date (evaluate)")
    offers: dict[str, Offer] = Field(default_factory=dict, description="strategy → fallback offer")
    audiences: list[Audience] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> "CampaignConfig":
        names = [a.name for a in self.audiences]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"audience names must be unique; repeated: {dup}")
        bad = sorted(set(self.offers) - set(STRATEGIES) - {"default"})
        if bad:
            raise ValueError(f"offers: unknown strategy key(s) {bad}; use {list(STRATEGIES)} or 'default'")
        return self

    def offer_for(self, audience: _Audience, strategy: str) -> Offer | None:
        """The audience's offer for a strategy, else its default, else the campaign's."""
        for table in (audience.offers, self.offers):
            if strategy in table:
                return table[strategy]
            if "default" in table:
                return table["default"]
        return None


def parse_campaign(data: object, source: str = "<dict>") -> CampaignConfig:
    return validate_mapping(CampaignConfig, data, source, "campaign config", CampaignConfigError)


def load_campaign(path: str | Path | None = None) -> CampaignConfig:
    """Load and validate a campaign YAML; None gives the shipped defaults (audiences.yaml)."""
    p = Path(path) if path is not None else DEFAULT_AUDIENCES
    if not p.is_file():
        raise CampaignConfigError(f"campaign config {p} does not exist (the shipped default is {DEFAULT_AUDIENCES})")
    return parse_campaign(read_yaml(p, CampaignConfigError), str(p))
