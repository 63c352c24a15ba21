"""Synthetic store generator: realistic member histories of a Chinese online shop, with the ground truth behind them.

`generate(n_members, seed)` returns a `SyntheticData` (clean contract tables as Arrow, ground truth as pandas);
`generate_to_store(n_members, seed, out)` writes a store folder (streaming, parallel); `member-ml generate` is the CLI.
Everything is vectorised numpy / Arrow: there is no Python loop over members, orders or events.

Determinism
-----------
The data are a pure function of (n_members, seed, start, end, chunk_members). Members are drawn in chunks of
`CHUNK_MEMBERS` (50,000); chunk k uses `SeedSequence([seed, 1, k])`, the catalogue `SeedSequence([seed, 0])`, messy
injection `SeedSequence([seed, 2])`. Chunks may run in parallel processes (`workers`): that never changes the data.
The window is fixed (default 2024-01-01 .. 2025-12-31 inclusive, never "now"), so stores are reproducible.
Times below are in days since the window start; the window has D days; "day d" is [d, d + 1).

Calendar (features.synthetic.calendar, deterministic)
-----------------------------------------------------
Day weight of deal group g: `w_g(d) = weekday(d) * cny(d) * promo(d) ** e_g` (`seasonal_weights(days, e_g)`), with
weekday factors Mon..Sun 0.93 0.94 0.96 0.98 1.00 1.08 1.11; cny = 0.55 from 10 days before to 7 days after a Spring
Festival; promo = 618 (June 1-17 ramp 1.0 -> 1.8, June 18 = 5.0, June 19-20 = 1.3), 双11 (Oct 20 - Nov 10 pre-sale
1.3 -> 2.0, Nov 11 = 9.0, Nov 12-13 = 1.4), 双12 (Dec 12 = 2.5), Mar 8 = 1.6, else 1. Deal-sensitivity exponents
e = (0.5, 1.0, 1.5) with shares (0.30, 0.45, 0.25). A *peak day* has promo >= 1.5. Hour of day follows the member's
persona profile (`HOUR_PROFILES`: office_worker peaks 19-21h with a lunch bump, student late evening, parent mid-morning
and evening, retiree mornings); minute and second uniform.

Members (features.synthetic.population)
---------------------------------------
- persona ~ (office_worker .45, student .15, parent .25, retiree .15); gender F/M/U by persona (U 4%); age by persona
  (office N(31, 6) in [20, 50], student U[18, 25], parent N(33, 4) in [24, 45], retiree U[55, 76]); birthday drawn
  consistently; `age` = whole years at the window end. region: 31 provinces by online-shopper share; channel: tmall,
  taobao, app, wechat_miniprogram, douyin, offline_store. marketing_consent False with probability 0.05.
- joined_at: 45% before the window (uniform over the 3 previous years), 55% inside (day ~ w_1, i.e. more joins around
  618 / 双11; never in the last 7 days).
- Latent normals (z_rate, z_engagement, z_spend, z_loyalty) with correlations (rate-engagement .6, rate-spend .15,
  rate-loyalty .3, engagement-spend .1, engagement-loyalty .4, spend-loyalty .1).
- purchase_rate r = 0.025 * exp(0.85 z_rate) base orders per day at weight 1.
- churn: the 12% with the highest z_loyalty are loyal (hazard 0, never drop out); the others have hazard
  h = (1/500) * exp(-0.7 z_loyalty) per day and drop out at `dropout = joined + Exp(h)` (memoryless, from joining, so
  some pre-window members are already dormant at the start). After dropping out a member never orders or interacts.
- active days [a, b): a = max(0, floor(joined) + 1), b = min(floor(dropout), D) (b <= a: no activity at all).
- spend_level z_spend: price-tier probabilities softmax(-0.9 z, 0, 0.9 z) over (budget, mid, premium) price terciles
  of a category; basket: mean extra lines per base order 0.45 * exp(0.25 z_spend + 0.25 N(0, 1)).
- engagement = exp(0.7 z_engagement - 0.245) (mean 1); taste cluster uniform over 8 (items belong to clusters);
  coupon propensity Beta(2, 8) x (0.7, 1.0, 1.5 by deal group); refund propensity lognormal mean 1; review propensity
  Beta(1.5, 9) x engagement; check-in habit with probability 0.08 x engagement.
- preference over the 10 categories 美妆 母婴 服饰 数码 家居 食品 个护 家电 图书 运动 ~ Dirichlet(3 * base shares shifted by
  gender and persona, e.g. parents x4 母婴). Replenishers: for each consumable category c (美妆 50 d, 母婴 24 d,
  食品 28 d, 个护 40 d base cycles) the member replenishes c with probability 1 - exp(-2 preference_c), with
  cycle = base_c * exp(0.3 N(0, 1)) days (rounded to 0.1). A replenished category keeps weight 0.15 in the base
  orders (its need is met by replenishment); `affinity` = the renormalised result = the category mix of base lines.

Orders (features.synthetic.orders)
----------------------------------
- Base orders: on each active day d, Poisson(r * w_g(d)) orders (g = the member's deal group); so the expected number
  in a window [t1, t2) is r * sum of w_g over active days in it (`expected_base_orders` = the whole window).
- Lines per base order: 1 + Poisson(basket * (1.6 on peak days)). Each line: category ~ affinity; taste cluster =
  own with probability 0.6 else uniform; tier ~ the member's tier probabilities; item ~ popularity within that
  (category, cluster, tier) group. The same item twice in an order is kept once.
- Replenishment orders (one line each, the member's *staple* item of c, a popularity-weighted consumable): first at
  a + U(0, cycle), then gaps cycle * max(0.3, 1 + 0.15 N(0, 1)), while before b. They add to the base process.
- Quantity: consumables 1 + Poisson(0.35), other items 2 with probability 0.05 else 1. list value = price * quantity.
  Promotion: on peak days with probability 0.85 a share U(0.10, 0.30), else with probability 0.30 U(0.03, 0.15).
  Coupon: per order with probability coupon_propensity (x1.6 on peak days, max 0.95), worth U(0.05, 0.15) of each
  line's list value. `discount` = yuan off the list value (promotion + coupon); `amount` = list value - discount
  (paid, yuan, 2 decimals); `coupon_used` = the order used a coupon.
- Cancellations: 0.8% of orders; each line gets a `cancelled` row 60 s + Exp(20 min) later. Refunds: a paid line of a
  non-cancelled order is refunded with probability 0.034 x refund propensity x category factor (服饰 2.2 ... 食品 0.4),
  as a `refunded` row 1 day + Exp(6 days) later, dropped if after the window. Undo rows repeat the line (order_id,
  member_id, item_id, category, quantity, discount, coupon_used) with the amount given back (positive).
- Order ids: O + 10 digits, numbered by time within a chunk, chunk after chunk; rows of a chunk sorted by time.

Events (features.synthetic.events)
----------------------------------
Funnel before each paid line: view (p .45, Exp(6 h) before), cart (p .25, Exp(1 h)), favorite (p .04, Exp(1 day)).
Reviews: a paid line never undone is reviewed with probability review propensity, 2 days + Exp(4 days) later, value =
rating 1-5 (70% 5s). Browsing: item interactions on active days at 0.012 * engagement * (r / 0.025) ** 0.3 * w_g(d)
per day, split view .84 / like .09 / favorite .04 / share .03, items drawn like base lines. Logins 0.02 * engagement
per active day; check-ins 0.25 per active day for members with the habit; redeem 0.12 * r * w_g(d) per day with value =
points (100 x (1 + Poisson(3))); profile_completed once, Exp(2 days) after joining, for in-window joiners with
probability 0.3 + 0.4 engagement (max .95). Events before joining or after the window are dropped.

Ground truth (written beside the store)
---------------------------------------
`ground_truth.parquet`, one row per member: persona, deal_exponent, purchase_rate, churn_hazard, is_loyal, joined_at,
active_from / active_to (day boundaries of [a, b)), dropout_at (NaT if no dropout inside the window; may be before the
window start for dormant members), expected_base_orders, spend_level, expected_line_value (approximate list value of a
base line), basket_extra_lines, engagement, taste_cluster, coupon/refund/review propensities, checkin_habit, and
affinity_<category> (sums to 1). `ground_truth_cycles.parquet`, one row per replenished (member, category):
cycle_days, staple_item_id, first_purchase_at (may be after the member's activity ended), purchases_in_window.

Campaigns with a known effect (features.synthetic.campaign)
-----------------------------------------------------------
`simulate_campaign_response(ground_truth, items, treated, send_at, control=...)` returns the extra orders a campaign
causes (treated members only) and a truth table with each member's exact uplift (see that module).

Messy stores (features.synthetic.messy)
---------------------------------------
`messy=True` adds a known number of bad rows per ingestion rule (see that module); raw tables go to disk with
`messy_injections.json` ({rule: count}) and `messy_injections_by_table.json`.
"""
from features.synthetic.generator import (
    CHUNK_MEMBERS,
    DEFAULT_END,
    DEFAULT_START,
    SyntheticData,
    arrow_schema,
    generate,
)
from features.synthetic.campaign import CampaignResponse, simulate_campaign_response
from features.synthetic.writer import generate_to_store, write_store

__all__ = [
    "CampaignResponse", "simulate_campaign_response", "CHUNK_MEMBERS", "DEFAULT_END", "DEFAULT_START", "SyntheticData", "arrow_schema", "generate", "generate_to_store",
    "write_store",
]
