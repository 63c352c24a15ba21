"""Quote a cart for a member: price after the tier discount and the points it will earn, with the reasons."""
from __future__ import annotations

import datetime as dt
import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from loyalty.config import LoyaltyConfig
from loyalty.member import MemberState
from loyalty.points import base_points, multiply


class CartLine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_id: str | None = None
    category: str | None = None
    price: float = Field(ge=0, description="unit price before the member discount")
    quantity: float = Field(1.0, gt=0)


class Cart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lines: list[CartLine] = Field(min_length=1)
    at: dt.datetime | None = Field(None, description="when the order would be placed (birthday month, member day)")


class Quote(BaseModel):
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


def quote(cart: Cart, state: MemberState, config: LoyaltyConfig) -> Quote:
    """Price after the tier discount (× the member-day discount on the configured day of the month, for tiers with
    the member-day benefit; rounded to the fen) and the points the order earns, floored per order as the ledger
    does: base on the amount paid, category bonuses per line, × tier multiplier × birthday-month multiplier."""
    rank = state.tier_rank if state.tier_rank is not None else 0
    tier = config.ladder.tiers[rank]
    when = cart.at or state.as_of
    rate = tier.benefits.discount_rate
    reasons: list[str] = []
    if rate < 1:
        reasons.append(f"{tier.name}: {round(rate * 10, 2):g}折 (discount rate {rate:g})")
    member_day = bool(tier.benefits.member_day and config.member_day_of_month
                      and when.day == config.member_day_of_month)
    if member_day and config.member_day_discount_rate < 1:
        md = config.member_day_discount_rate
        rate = rate * md
        reasons.append(f"member day ({config.member_day_of_month}th): extra {round(md * 10, 2):g}折 "
                       f"(discount rate {md:g}; {rate:.4g} in all)")
    subtotal = sum(ln.price * ln.quantity for ln in cart.lines)
    total_cents = int(math.floor(subtotal * rate * 100 + 0.5 + 1e-9))
    subtotal_cents = int(math.floor(subtotal * 100 + 0.5 + 1e-9))
    p = config.points
    base = int(base_points(np.array([total_cents]), config)[0])
    reasons.append(f"{p.points_per_unit} points per full {p.unit_amount:g} {config.currency} paid: "
                   f"{total_cents / 100:.2f} → {base}")
    bonus = 0
    for ln in cart.lines:
        b = p.category_bonus.get(ln.category or "", 0)
        if b:
            bonus += b
            reasons.append(f"category bonus {ln.category}: +{b}")
    mult = 1.0
    if p.apply_tier_multiplier and tier.benefits.points_multiplier != 1.0:
        mult *= tier.benefits.points_multiplier
        reasons.append(f"tier multiplier {tier.name}: ×{tier.benefits.points_multiplier:g}")
    if state.birth_month and when.month == state.birth_month and p.birthday_month_multiplier != 1.0:
        mult *= p.birthday_month_multiplier
        reasons.append(f"birthday month: ×{p.birthday_month_multiplier:g}")
    if member_day and config.member_day_discount_rate >= 1:
        reasons.append(f"member day ({config.member_day_of_month}th): member-day offers apply")
    points = int(multiply(np.array([base + bonus]), np.array([mult]))[0])
    return Quote(tier=state.tier, subtotal=subtotal_cents / 100, discount_rate=rate, total=total_cents / 100,
                 savings=(subtotal_cents - total_cents) / 100, base_points=base, bonus_points=bonus, multiplier=mult,
                 points=points, reasons=reasons)
