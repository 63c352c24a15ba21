"""Campaign responses with a known treatment effect, for testing uplift measurement (treated vs control).

`simulate_campaign_response(ground_truth, items, treated, send_at, control=...)` draws the *extra* orders a campaign
causes. The true effect per member is known exactly:

- uplift_orders u_i = base_uplift * (0.5 + 2.5 * coupon_propensity_i), times `winback_factor` when the member has
  already dropped out at the send time (a campaign can win some of them back), capped at 0.9. A treated member places
  one extra campaign order with probability u_i; control members get none. So the expected incremental orders of a
  treated group are sum(u_i), and the expected difference in conversion (any paid order in the horizon) between a
  treated and a control member with the same parameters is u_i * (1 - P(no other order)), with
  p_base_order_i = 1 - exp(-purchase_rate * sum of the member's day weights over active days in [send, send + H))
  (the base process only; replenishment orders come on top).
- The extra order: one line of an item from the member's highest-affinity category, at send + a truncated Exp(2 days)
  delay inside the horizon, paid with a coupon worth 15% of the price (`coupon_used` True).

Rows come back in contract columns, ready to append to a store's orders (order ids `<prefix>` + 9 digits).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.contract import ITEM_ID, MEMBER_ID, ORDER_ID, ORDERED_AT, SCHEMAS, conform
from features.synthetic.calendar import DEAL_EXPONENTS, day_range, seasonal_weights
from features.synthetic.catalogue import CATEGORY_NAMES, id_strings

CAMPAIGN_COUPON_SHARE = 0.15
RESPONSE_DELAY_DAYS = 2.0


@dataclass
class CampaignResponse:
    orders: pd.DataFrame   # extra order lines caused by the campaign (contract columns)
    truth: pd.DataFrame    # member_id, treated, alive_at_send, p_base_order, uplift_orders, responded


def _base_order_probability(gt: pd.DataFrame, send: pd.Timestamp, horizon_days: int) -> np.ndarray:
    days = day_range(send.date(), (send + pd.Timedelta(days=horizon_days - 1)).date())
    d0 = np.datetime64(send.date(), "D")
    a = ((gt["active_from"].to_numpy().astype("datetime64[D]") - d0).astype(np.int64)).clip(0, horizon_days)
    b = ((gt["active_to"].to_numpy().astype("datetime64[D]") - d0).astype(np.int64)).clip(0, horizon_days)
    b = np.maximum(a, b)
    group = np.abs(gt["deal_exponent"].to_numpy()[:, None] - DEAL_EXPONENTS[None, :]).argmin(axis=1)
    cum = np.stack([np.r_[0.0, np.cumsum(seasonal_weights(days, e))] for e in DEAL_EXPONENTS])
    mass = cum[group, b] - cum[group, a]
    return 1.0 - np.exp(-gt["purchase_rate"].to_numpy() * mass)


def simulate_campaign_response(
    ground_truth: pd.DataFrame,
    items: pd.DataFrame,
    treated: Iterable[str],
    send_at: str | pd.Timestamp,
    *,
    control: Iterable[str] = (),
    horizon_days: int = 14,
    base_uplift: float = 0.08,
    winback_factor: float = 0.25,
    seed: int = 0,
    order_prefix: str = "OC",
) -> CampaignResponse:
    """Draw the campaign's extra orders for `treated` members (control members are listed in the truth only)."""
    if horizon_days < 1:
        raise ValueError(f"horizon_days must be >= 1 (got {horizon_days})")
    if not 0.0 <= base_uplift <= 1.0:
        raise ValueError(f"base_uplift must be in [0, 1] (got {base_uplift})")
    treated_ids = pd.Index(pd.unique(pd.Series(list(treated), dtype="string")))
    control_ids = pd.Index(pd.unique(pd.Series(list(control), dtype="string")))
    both = treated_ids.intersection(control_ids)
    if len(both):
        raise ValueError(f"{len(both)} member(s) are both treated and control, e.g. {list(both[:3])}")
    gt = ground_truth.set_index(MEMBER_ID)
    wanted = treated_ids.append(control_ids)
    unknown = wanted.difference(gt.index)
    if len(unknown):
        raise ValueError(f"{len(unknown)} member id(s) are not in the ground truth, e.g. {list(unknown[:3])}")
    send = pd.Timestamp(send_at)
    g = gt.loc[wanted].reset_index()
    is_treated = np.r_[np.ones(len(treated_ids), bool), np.zeros(len(control_ids), bool)]
    alive = (g["active_from"] <= send) & (g["active_to"] > send)
    p_base = _base_order_probability(g, send, horizon_days)
    u = base_uplift * (0.5 + 2.5 * g["coupon_propensity"].to_numpy())
    u = np.minimum(np.where(alive, u, u * winback_factor), 0.9)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 404]))
    responded = is_treated & (rng.random(len(g)) < u)

    # the extra orders
    r = np.flatnonzero(responded)
    aff = g[[f"affinity_{c}" for c in CATEGORY_NAMES]].to_numpy()[r]
    top_code = aff.argmax(axis=1) if len(r) else np.zeros(0, np.int64)
    top = np.array(CATEGORY_NAMES, dtype=object)[top_code]
    it = items.reset_index(drop=True)
    item_cat = it["category"].to_numpy(dtype=object)
    pick = np.full(len(r), -1, np.int64)
    for ci, c in enumerate(CATEGORY_NAMES):  # ten categories, each filled in bulk
        sel = np.flatnonzero(top_code == ci)
        pool = np.flatnonzero(item_cat == c)
        if sel.size and pool.size:
            pick[sel] = pool[rng.integers(0, pool.size, sel.size)]
    if (pick < 0).any():
        raise ValueError("the items table has no item in a responding member's top category")
    price = it["price"].to_numpy(dtype=float)[pick]
    h = float(horizon_days)
    delay = -RESPONSE_DELAY_DAYS * np.log1p(-rng.random(len(r)) * (1 - np.exp(-h / RESPONSE_DELAY_DAYS)))
    when = send + pd.to_timedelta(np.minimum(np.round(delay * 86400), h * 86400 - 1), unit="s")
    amount = np.round(price * (1 - CAMPAIGN_COUPON_SHARE), 2)
    orders = conform(pd.DataFrame({
        ORDER_ID: pd.array(id_strings(order_prefix, np.arange(1, len(r) + 1), 9), dtype="string"),
        MEMBER_ID: g[MEMBER_ID].to_numpy()[r],
        ORDERED_AT: when,
        "amount": amount,
        ITEM_ID: it[ITEM_ID].to_numpy()[pick],
        "category": top,
        "quantity": 1.0,
        "discount": np.round(price - amount, 2),
        "coupon_used": True,
        "status": "paid",
    }), SCHEMAS["orders"])
    truth = pd.DataFrame({
        MEMBER_ID: g[MEMBER_ID].astype("string"),
        "treated": is_treated,
        "alive_at_send": alive.to_numpy(),
        "p_base_order": p_base,
        "uplift_orders": np.where(is_treated, u, 0.0),
        "potential_uplift": u,
        "responded": responded,
    })
    return CampaignResponse(orders=orders, truth=truth)
