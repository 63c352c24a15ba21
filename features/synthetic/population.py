"""Members of the synthetic shop: demographics and the latent parameters that drive their behaviour (vectorised)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.synthetic.calendar import DEAL_SHARES, PERSONA_SHARES, PERSONAS
from features.synthetic.catalogue import CATEGORIES, CATEGORY_NAMES, CONSUMABLE_CATEGORIES, N_CATEGORIES, N_CLUSTERS

# Provinces (and municipalities / autonomous regions) with rough shares of online shoppers.
REGIONS: dict[str, float] = {
    "广东": 0.12, "浙江": 0.08, "江苏": 0.08, "山东": 0.06, "上海": 0.05, "北京": 0.045, "河南": 0.05, "四川": 0.05,
    "湖北": 0.04, "福建": 0.04, "湖南": 0.035, "安徽": 0.035, "河北": 0.035, "辽宁": 0.025, "陕西": 0.025,
    "重庆": 0.025, "天津": 0.02, "江西": 0.02, "广西": 0.02, "云南": 0.018, "山西": 0.015, "黑龙江": 0.015,
    "吉林": 0.012, "贵州": 0.012, "内蒙古": 0.01, "新疆": 0.01, "甘肃": 0.008, "海南": 0.008, "宁夏": 0.004,
    "青海": 0.003, "西藏": 0.002,
}
CHANNELS: dict[str, float] = {
    "tmall": 0.35, "taobao": 0.25, "app": 0.15, "wechat_miniprogram": 0.12, "douyin": 0.10, "offline_store": 0.03,
}
GENDER_CODES: tuple[str, ...] = ("F", "M", "U")

# Behavioural constants (documented in features/synthetic/__init__.py).
RATE_MEDIAN = 0.025         # base orders per day at seasonal weight 1 (median member)
RATE_SIGMA = 0.85           # lognormal sigma of the purchase rate
HAZARD_MEDIAN = 1 / 500     # churn hazard per day (median non-loyal member)
HAZARD_SIGMA = 0.7
LOYAL_SHARE = 0.12          # members with zero churn hazard (never drop out)
PRE_WINDOW_SHARE = 0.45     # members who joined before the window starts (up to 3 years before)
PRE_WINDOW_YEARS = 3
NO_CONSENT_SHARE = 0.05
AFFINITY_CONCENTRATION = 3.0
REPLENISH_STRENGTH = 2.0    # P(replenisher of consumable category c) = 1 - exp(-REPLENISH_STRENGTH * affinity_c)
CYCLE_SIGMA = 0.30          # lognormal sigma of a member's cycle around the category's base cycle
REPLENISHED_BASE_WEIGHT = 0.15  # a replenished category keeps this share of its weight in the member's base orders
# correlation of the latent normals (purchase rate, engagement, spend level, loyalty)
LATENT_CORR = np.array([
    [1.00, 0.60, 0.15, 0.30],
    [0.60, 1.00, 0.10, 0.40],
    [0.15, 0.10, 1.00, 0.10],
    [0.30, 0.40, 0.10, 1.00],
])

_GENDER_MULT = {
    "F": {"美妆": 2.2, "母婴": 1.3, "服饰": 1.3, "数码": 0.6, "家电": 0.8, "运动": 0.8},
    "M": {"美妆": 0.3, "母婴": 0.7, "服饰": 0.8, "数码": 2.2, "家电": 1.3, "运动": 1.6},
    "U": {},
}
_PERSONA_MULT = {
    "office_worker": {"服饰": 1.2, "美妆": 1.1},
    "student": {"数码": 1.3, "图书": 1.8, "美妆": 1.2, "母婴": 0.1, "家电": 0.5},
    "parent": {"母婴": 4.0, "食品": 1.2, "家居": 1.2},
    "retiree": {"食品": 1.5, "家居": 1.3, "个护": 1.2, "数码": 0.5, "母婴": 0.8, "运动": 0.6},
}


@dataclass
class Population:
    """Per-member arrays (index = member number - 1). Times are float days since the window start."""

    n: int
    n_days: int
    persona: np.ndarray
    gender: np.ndarray
    age: np.ndarray
    birthday_day: np.ndarray      # int days since the window start (negative)
    region: np.ndarray
    channel: np.ndarray
    consent: np.ndarray
    join_t: np.ndarray
    deal_group: np.ndarray
    rate: np.ndarray
    hazard: np.ndarray
    dropout_t: np.ndarray         # inf: never drops out
    active_from: np.ndarray       # int day: first day with base orders
    active_to: np.ndarray         # int day: first day without (exclusive); active_to <= active_from: none
    spend_z: np.ndarray
    tier_cum: np.ndarray          # (n, tiers) cumulative tier probabilities
    basket: np.ndarray            # mean number of extra lines per base order
    engagement: np.ndarray
    affinity: np.ndarray          # (n, categories): category probabilities of base-order lines and browsing
    cluster: np.ndarray
    coupon_prop: np.ndarray
    refund_prop: np.ndarray
    review_prop: np.ndarray
    checkin_habit: np.ndarray
    rep_member: np.ndarray        # replenishment pairs: member index, consumable category, cycle in days
    rep_category: np.ndarray
    rep_cycle: np.ndarray


def tier_probabilities(spend_z: np.ndarray) -> np.ndarray:
    """P(budget, mid, premium) per member: softmax(-0.9 z, 0, 0.9 z)."""
    logits = np.stack([-0.9 * spend_z, np.zeros_like(spend_z), 0.9 * spend_z], axis=1)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _categorical(rng: np.random.Generator, probs: np.ndarray, n: int) -> np.ndarray:
    c = np.cumsum(np.asarray(probs, dtype=float) / np.sum(probs))
    c[-1] = 1.0
    return np.searchsorted(c, rng.random(n), side="right")


def make_population(rng: np.random.Generator, n: int, n_days: int, join_weights: np.ndarray) -> Population:
    """Draw n members' demographics and latent behaviour; `join_weights` (per day) shape in-window join dates."""
    persona = _categorical(rng, PERSONA_SHARES, n)
    # gender depends on persona
    p_f = np.array([0.58, 0.55, 0.78, 0.52])[persona]
    u = rng.random(n)
    gender = np.where(u < 0.04, 2, np.where(u < 0.04 + 0.96 * p_f, 0, 1))
    age_f = np.select(
        [persona == 0, persona == 1, persona == 2],
        [np.clip(rng.normal(31, 6, n), 20, 50), rng.uniform(18, 25, n), np.clip(rng.normal(33, 4, n), 24, 45)],
        rng.uniform(55, 76, n),
    )
    birthday_day = np.floor(n_days - 1 - (age_f + rng.random(n)) * 365.25).astype(np.int64)
    age = np.floor((n_days - 1 - birthday_day) / 365.25)
    region = _categorical(rng, list(REGIONS.values()), n)
    channel = _categorical(rng, list(CHANNELS.values()), n)
    consent = rng.random(n) >= NO_CONSENT_SHARE

    # join time: pre-window (uniform over the previous years) or in-window (following the seasonal intensity)
    pre = rng.random(n) < PRE_WINDOW_SHARE
    join_t = np.empty(n)
    join_t[pre] = -rng.random(pre.sum()) * PRE_WINDOW_YEARS * 365.0
    last_join_day = max(1, n_days - 7)
    w = join_weights[:last_join_day]
    jd = _categorical(rng, w, int((~pre).sum()))
    join_t[~pre] = jd + rng.random(jd.size)

    z = rng.standard_normal((n, 4)) @ np.linalg.cholesky(LATENT_CORR).T
    z_rate, z_eng, z_spend, z_loyal = z.T
    deal_group = _categorical(rng, DEAL_SHARES, n)
    rate = RATE_MEDIAN * np.exp(RATE_SIGMA * z_rate)
    loyal = z_loyal > np.quantile(z_loyal, 1 - LOYAL_SHARE) if n > 1 else np.zeros(n, bool)
    hazard = np.where(loyal, 0.0, HAZARD_MEDIAN * np.exp(-HAZARD_SIGMA * z_loyal))
    with np.errstate(divide="ignore"):
        life = np.where(hazard > 0, rng.exponential(1.0, n) / np.where(hazard > 0, hazard, 1.0), np.inf)
    dropout_t = join_t + life
    active_from = np.maximum(0, np.floor(join_t).astype(np.int64) + 1)
    active_to = np.clip(np.floor(np.minimum(dropout_t, n_days)), 0, n_days).astype(np.int64)
    active_to = np.maximum(active_to, active_from)  # empty interval when dropped out before joining+1 day / start

    tier_cum = np.cumsum(tier_probabilities(z_spend), axis=1)
    tier_cum[:, -1] = 1.0
    basket = 0.45 * np.exp(0.25 * z_spend + 0.25 * rng.standard_normal(n))
    engagement = np.exp(0.7 * z_eng - 0.245)  # mean 1

    # category affinities: Dirichlet around a base measure shifted by gender and persona
    base = np.array([c.popularity for c in CATEGORIES])
    mult = np.ones((len(GENDER_CODES), len(PERSONAS), N_CATEGORIES))
    for gi, g in enumerate(GENDER_CODES):
        for pi, p in enumerate(PERSONAS):
            for ci, name in enumerate(CATEGORY_NAMES):
                mult[gi, pi, ci] = _GENDER_MULT[g].get(name, 1.0) * _PERSONA_MULT[p].get(name, 1.0)
    alpha_tab = base * mult
    alpha_tab = AFFINITY_CONCENTRATION * alpha_tab / alpha_tab.sum(axis=2, keepdims=True)
    g = rng.standard_gamma(alpha_tab[gender, persona])
    g = np.maximum(g, 1e-12)
    preference = g / g.sum(axis=1, keepdims=True)

    # replenishers: P(member replenishes consumable category c) = 1 - exp(-REPLENISH_STRENGTH * preference_c); their
    # need for c is met mostly by the replenishment process, so c keeps REPLENISHED_BASE_WEIGHT in base orders
    pm, pc, cyc = [], [], []
    weight = np.ones_like(preference)
    for c in CONSUMABLE_CATEGORIES:
        who = np.flatnonzero(rng.random(n) < 1.0 - np.exp(-REPLENISH_STRENGTH * preference[:, c]))
        pm.append(who)
        pc.append(np.full(who.size, c))
        cyc.append(np.round(CATEGORIES[c].cycle_days * np.exp(CYCLE_SIGMA * rng.standard_normal(who.size)), 1))
        weight[who, c] = REPLENISHED_BASE_WEIGHT
    affinity = preference * weight
    affinity /= affinity.sum(axis=1, keepdims=True)

    cluster = rng.integers(0, N_CLUSTERS, n)
    deal_boost = np.array([0.7, 1.0, 1.5])[deal_group]
    coupon_prop = np.clip(rng.beta(2, 8, n) * deal_boost, 0, 0.9)
    refund_prop = np.exp(0.6 * rng.standard_normal(n) - 0.18)  # mean 1
    review_prop = np.clip(rng.beta(1.5, 9, n) * engagement, 0, 0.9)
    checkin_habit = rng.random(n) < np.clip(0.08 * engagement, 0, 0.6)
    return Population(
        n=n, n_days=n_days, persona=persona, gender=gender, age=age, birthday_day=birthday_day, region=region,
        channel=channel, consent=consent, join_t=join_t, deal_group=deal_group, rate=rate, hazard=hazard,
        dropout_t=dropout_t, active_from=active_from, active_to=active_to, spend_z=z_spend, tier_cum=tier_cum,
        basket=basket, engagement=engagement, affinity=affinity, cluster=cluster, coupon_prop=coupon_prop,
        refund_prop=refund_prop, review_prop=review_prop, checkin_habit=checkin_habit,
        rep_member=np.concatenate(pm), rep_category=np.concatenate(pc), rep_cycle=np.concatenate(cyc),
    )
