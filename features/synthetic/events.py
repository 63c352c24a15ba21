"""Interaction events of the synthetic shop (views, carts, favourites, reviews, shares, likes, check-ins, logins,
profile completion, points redemption), with rates tied to each member's engagement and purchase rate.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.synthetic.calendar import sample_seconds_of_day
from features.synthetic.orders import DAY, OrderLines, argsort_seconds, pick_items_for, poisson_days
from features.synthetic.catalogue import Catalogue
from features.synthetic.population import RATE_MEDIAN, Population

EVENT_CODES: tuple[str, ...] = (
    "view", "cart", "favorite", "review", "share", "like", "checkin", "login", "profile_completed", "redeem",
)
_E = {t: i for i, t in enumerate(EVENT_CODES)}

# purchase funnel: P(event before a paid line), mean lead time in seconds
FUNNEL = {"view": (0.45, 6 * 3600), "cart": (0.25, 3600), "favorite": (0.04, DAY)}
BROWSE_RATE = 0.012        # item interactions per day at engagement 1 and median purchase rate (seasonal)
BROWSE_MIX = {"view": 0.84, "like": 0.09, "favorite": 0.04, "share": 0.03}
LOGIN_RATE = 0.02          # per day x engagement (flat over the week)
CHECKIN_RATE = 0.25        # per day for members with a check-in habit
REDEEM_PER_ORDER = 0.12    # redemptions per day = 0.12 x purchase rate (seasonal)
REVIEW_DELAY_DAYS = (2.0, 4.0)  # review time = line time + 2 days + Exp(mean 4 days)
RATINGS = (np.array([1, 2, 3, 4, 5]), np.array([0.03, 0.03, 0.06, 0.18, 0.70]))


@dataclass
class Events:
    member: np.ndarray
    sec: np.ndarray
    type: np.ndarray     # index into EVENT_CODES
    item: np.ndarray     # item index, -1 = none
    value: np.ndarray    # float, NaN = none


def simulate_events(
    rng: np.random.Generator,
    pop: Population,
    cat: Catalogue,
    lines: OrderLines,
    cum_seasonal: np.ndarray,
) -> Events:
    """Draw every event of the window, sorted by time (see the package docstring)."""
    n_days = pop.n_days
    end_sec = n_days * DAY
    join_sec = np.maximum(np.ceil(pop.join_t * DAY), 0).astype(np.int64)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def add(member: np.ndarray, sec: np.ndarray, typ: np.ndarray | int, item: np.ndarray | None = None,
            value: np.ndarray | None = None) -> None:
        ok = (sec >= join_sec[member]) & (sec < end_sec)
        k = int(ok.sum())
        typ_a = np.full(member.size, typ, np.int8) if np.isscalar(typ) else typ
        parts.append((member[ok], sec[ok], typ_a[ok],
                      (item[ok] if item is not None else np.full(k, -1, np.int64)),
                      (value[ok] if value is not None else np.full(k, np.nan))))

    # purchase funnel before paid lines
    paid = np.flatnonzero(lines.status == 0)
    pm, ps, pi = lines.member[paid], lines.sec[paid], lines.item[paid]
    for name, (p, lead) in FUNNEL.items():
        hit = rng.random(paid.size) < p
        sec = ps[hit] - 60 - rng.exponential(lead, int(hit.sum())).astype(np.int64)
        add(pm[hit], sec, _E[name], pi[hit])

    # reviews of lines that were neither refunded nor cancelled
    undone = lines.undone[paid]
    hit = (rng.random(paid.size) < pop.review_prop[pm]) & ~undone
    k = int(hit.sum())
    sec = ps[hit] + ((REVIEW_DELAY_DAYS[0] + rng.exponential(REVIEW_DELAY_DAYS[1], k)) * DAY).astype(np.int64)
    rating = rng.choice(RATINGS[0], size=k, p=RATINGS[1]).astype(np.float64)
    add(pm[hit], sec, _E["review"], pi[hit], rating)

    # browsing: item interactions on active days, seasonal like purchases
    rel = (pop.rate / RATE_MEDIAN) ** 0.3
    browse_rate = BROWSE_RATE * pop.engagement * rel
    mix_codes = np.array([_E[t] for t in BROWSE_MIX])
    mix_cum = np.cumsum(list(BROWSE_MIX.values()))
    mix_cum[-1] = 1.0
    m, day = poisson_days(rng, browse_rate, pop.active_from, pop.active_to, cum_seasonal, pop.deal_group)
    sec = day * DAY + sample_seconds_of_day(rng, pop.persona[m])
    typ = mix_codes[np.searchsorted(mix_cum, rng.random(m.size), side="right")].astype(np.int8)
    add(m, sec, typ, pick_items_for(rng, pop, cat, m))

    # logins and check-ins: flat over days
    flat = np.arange(n_days + 1, dtype=np.float64)
    for name, rate in (("login", LOGIN_RATE * pop.engagement), ("checkin", CHECKIN_RATE * pop.checkin_habit)):
        owner, day = poisson_days(rng, rate, pop.active_from, pop.active_to, flat)
        sec = day * DAY + sample_seconds_of_day(rng, pop.persona[owner])
        add(owner, sec, _E[name])

    # points redemption: tied to purchase rate, seasonal; value = points redeemed
    m, day = poisson_days(rng, REDEEM_PER_ORDER * pop.rate, pop.active_from, pop.active_to, cum_seasonal,
                          pop.deal_group)
    sec = day * DAY + sample_seconds_of_day(rng, pop.persona[m])
    add(m, sec, _E["redeem"], None, 100.0 * (1 + rng.poisson(3, m.size)))

    # profile completion: once, soon after joining (only visible for members who joined inside the window)
    new = np.flatnonzero((pop.join_t >= 0) & (rng.random(pop.n) < np.clip(0.3 + 0.4 * pop.engagement, 0, 0.95)))
    sec = np.ceil(pop.join_t[new] * DAY).astype(np.int64) + rng.exponential(2 * DAY, new.size).astype(np.int64)
    add(new, sec, _E["profile_completed"])

    member, sec, typ, item, value = (np.concatenate([p[i] for p in parts]) for i in range(5))
    srt = argsort_seconds(sec)
    return Events(member[srt], sec[srt], typ[srt], item[srt], value[srt])
