"""Order lines of the synthetic shop: a seasonal Poisson process per member, consumable replenishment on a
member x category cycle, baskets, prices, discounts, coupons, cancellations and refunds (all vectorised).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.synthetic.calendar import sample_seconds_of_day
from features.synthetic.catalogue import (
    CATEGORIES,
    N_CATEGORIES,
    N_CLUSTERS,
    OWN_CLUSTER_SHARE,
    Catalogue,
)
from features.synthetic.population import Population

DAY = 86_400
PEAK_BASKET_FACTOR = 1.6      # peak days: mean extra lines x 1.6
CONSUMABLE_EXTRA_QTY = 0.35   # consumables: quantity 1 + Poisson(0.35)
OTHER_QTY2_SHARE = 0.05       # other items: quantity 2 with probability 0.05, else 1
PROMO_PEAK = (0.85, 0.10, 0.30)     # peak days: P(promotion on a line), promotion share of list value ~ U(lo, hi)
PROMO_ORDINARY = (0.30, 0.03, 0.15)
COUPON_PEAK_FACTOR = 1.6
COUPON_SHARE = (0.05, 0.15)   # coupon value as a share of the line's list value ~ U(lo, hi), per order
CANCEL_SHARE = 0.008          # orders cancelled shortly after payment (every line gets a cancelled row)
REFUND_BASE = 0.034           # P(refund of a paid line) = REFUND_BASE * member refund_prop * category refund_factor
REFUND_DELAY_DAYS = (1.0, 6.0)  # refund time = order time + 1 day + Exp(mean 6 days)
CYCLE_JITTER = 0.15           # replenishment gap = cycle * max(0.3, 1 + 0.15 N(0,1))

STATUS_CODES: tuple[str, ...] = ("paid", "refunded", "cancelled")


def poisson_days(
    rng: np.random.Generator, rate: np.ndarray, a: np.ndarray, b: np.ndarray, cum: np.ndarray,
    group: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Events of a day-level inhomogeneous Poisson process per row on days [a, b).

    `cum[g, d]` is group g's cumulative day weight before day d (shape groups x (days + 1); a 1-d `cum` is one group)
    and `group` each row's group. Row i gets Poisson(rate_i * (cum[g_i, b_i] - cum[g_i, a_i])) events, each on a day
    drawn proportionally to the group's day weights. Returns (row index, day) per event, sorted by row.
    """
    cum = np.atleast_2d(cum)
    g = np.zeros(len(rate), np.int64) if group is None else np.asarray(group, np.int64)
    n_cols = cum.shape[1]
    offsets = np.arange(cum.shape[0]) * (float(cum[:, -1].max()) + 1.0)
    keys = (cum + offsets[:, None]).ravel()
    lo_all = cum[g, a]
    mass = cum[g, b] - lo_all
    k = rng.poisson(rate * mass)
    owner = np.repeat(np.arange(len(rate)), k)
    go = g[owner]
    u = lo_all[owner] + offsets[go] + rng.random(owner.size) * mass[owner]
    day = np.searchsorted(keys, u, side="right") - 1 - go * n_cols
    day = np.clip(day, a[owner], b[owner] - 1)
    return owner, day


def argsort_seconds(sec: np.ndarray) -> np.ndarray:
    """Stable argsort of non-negative int seconds < 2**32 by two 16-bit radix passes (much faster than timsort)."""
    sec = np.asarray(sec, dtype=np.int64)
    if sec.size and (sec.min() < 0 or sec.max() >= 2**32):
        return np.argsort(sec, kind="stable")
    p = np.argsort((sec & 0xFFFF).astype(np.uint16), kind="stable")
    return p[np.argsort((sec[p] >> 16).astype(np.uint16), kind="stable")]


def pick_categories(rng: np.random.Generator, affinity: np.ndarray, member: np.ndarray) -> np.ndarray:
    """Category per row drawn from its member's affinity vector (one searchsorted over offset cumulatives)."""
    cum = np.cumsum(affinity, axis=1)
    cum[:, -1] = 1.0
    keys = (np.arange(len(affinity))[:, None] + cum).ravel()
    u = np.minimum(rng.random(len(member)), 1.0 - 1e-9)
    flat = np.searchsorted(keys, member + u, side="right")
    return np.clip(flat - member.astype(np.int64) * affinity.shape[1], 0, affinity.shape[1] - 1)


def pick_items_for(rng: np.random.Generator, pop: Population, cat: Catalogue, member: np.ndarray) -> np.ndarray:
    """Item per row for member `member`: category by affinity, own taste cluster w.p. 0.6, tier by spend level."""
    category = pick_categories(rng, pop.affinity, member)
    own = rng.random(len(member)) < OWN_CLUSTER_SHARE
    cluster = np.where(own, pop.cluster[member], rng.integers(0, N_CLUSTERS, len(member)))
    u = rng.random(len(member))
    tc = pop.tier_cum[member]
    tier = (u > tc[:, 0]).astype(np.int64) + (u > tc[:, 1])
    return cat.pick(rng, category, cluster, tier)


@dataclass
class Cycles:
    """Replenishment ground truth: one row per (member, consumable category) that is replenished."""

    member: np.ndarray
    category: np.ndarray
    cycle_days: np.ndarray
    staple: np.ndarray          # item index
    first_t: np.ndarray         # float day of the first replenishment purchase (may be >= the member's active end)
    purchases: np.ndarray       # replenishment orders inside the window


@dataclass
class OrderLines:
    """All order rows (paid, cancelled, refunded), sorted by time; columns as arrays (indices into lookups)."""

    order_no: np.ndarray        # 0-based order number (order_id = O + 10 digits of order_no + 1)
    member: np.ndarray
    sec: np.ndarray             # int seconds since the window start
    amount: np.ndarray
    item: np.ndarray
    category: np.ndarray
    quantity: np.ndarray
    discount: np.ndarray
    coupon: np.ndarray
    status: np.ndarray          # index into STATUS_CODES
    replenishment: np.ndarray   # bool: line of a replenishment order
    undone: np.ndarray          # bool: a paid row whose line was later cancelled or refunded
    cycles: Cycles
    base_orders: int
    replenishment_orders: int


def _replenishment(rng: np.random.Generator, pop: Population, cat: Catalogue) -> tuple[Cycles, np.ndarray, np.ndarray]:
    """Replenishers, their cycles, and the (pair, float day) of every replenishment purchase in the window."""
    member, category, cycle = pop.rep_member, pop.rep_category, pop.rep_cycle
    staple = cat.pick_staple(rng, category)
    a = pop.active_from[member].astype(np.float64)
    b = pop.active_to[member].astype(np.float64)
    first = a + rng.random(member.size) * cycle
    span = np.maximum(b - first, 0.0)
    k = np.where(span > 0, np.ceil(span / (cycle * 0.85)) + 4, 0).astype(np.int64)
    pair = np.repeat(np.arange(member.size), k)
    gaps = cycle[pair] * np.maximum(0.3, 1.0 + CYCLE_JITTER * rng.standard_normal(pair.size))
    starts = np.r_[0, np.cumsum(k)[:-1]]
    gaps[starts[k > 0]] = 0.0  # the first purchase is at `first`
    cs = np.cumsum(gaps)
    t = first[pair] + cs - np.repeat(cs[starts[k > 0]], k[k > 0])
    ends = np.cumsum(k)[k > 0] - 1
    if ends.size and np.any(t[ends] < b[k > 0]):
        raise RuntimeError("replenishment draw did not cover the active window (increase the safety margin)")
    keep = t < b[pair]
    pair, t = pair[keep], t[keep]
    purchases = np.bincount(pair, minlength=member.size)
    return Cycles(member, category, cycle, staple, first, purchases), pair, t


def simulate_orders(
    rng: np.random.Generator,
    pop: Population,
    cat: Catalogue,
    cum_seasonal: np.ndarray,
    peak_day: np.ndarray,
) -> OrderLines:
    """Draw every order line of the window (see the package docstring for the exact process).

    Lines are drawn in member order (member-indexed lookups stay cache-friendly), then sorted by time once.
    """
    n_days = pop.n_days
    # --- base orders: a seasonal Poisson process (the member's deal group's day weights) on the active days
    base_m, base_d = poisson_days(rng, pop.rate, pop.active_from, pop.active_to, cum_seasonal, pop.deal_group)
    n_base = base_m.size

    # --- replenishment orders (one line: the member's staple item of the category)
    cycles, pair, t_rep = _replenishment(rng, pop, cat)
    m_o = np.concatenate([base_m, cycles.member[pair]])
    d_o = np.concatenate([base_d, np.floor(t_rep).astype(np.int64)])
    n_orders = m_o.size
    is_rep_o = np.r_[np.zeros(n_base, bool), np.ones(pair.size, bool)]
    sec_o = d_o * DAY + sample_seconds_of_day(rng, pop.persona[m_o])
    peak_o = peak_day[d_o]
    nlines_o = np.ones(n_orders, np.int64)
    nlines_o[:n_base] += rng.poisson(pop.basket[base_m] * np.where(peak_o[:n_base], PEAK_BASKET_FACTOR, 1.0))
    coupon_o = rng.random(n_orders) < np.clip(pop.coupon_prop[m_o] * np.where(peak_o, COUPON_PEAK_FACTOR, 1.0), 0, 0.95)
    coupon_share_o = np.where(coupon_o, rng.uniform(*COUPON_SHARE, n_orders), 0.0)
    cancelled_o = rng.random(n_orders) < CANCEL_SHARE
    # order numbers follow time (ties: generation order)
    order_no_o = np.empty(n_orders, np.int64)
    order_no_o[argsort_seconds(sec_o)] = np.arange(n_orders)

    # --- lines of base orders (member order), then the replenishment lines
    lo_base = np.repeat(np.arange(n_base), nlines_o[:n_base])
    item_base = pick_items_for(rng, pop, cat, base_m[lo_base])
    # the same item twice in one order is one line (only multi-line orders can repeat; lo_base is ascending)
    multi = np.flatnonzero(nlines_o[lo_base] > 1)
    key = lo_base[multi] * np.int64(cat.n) + item_base[multi]
    srt = np.argsort(key, kind="stable")
    dup = np.zeros(lo_base.size, bool)
    dup[multi[srt[1:][key[srt[1:]] == key[srt[:-1]]]]] = True
    lo = np.concatenate([lo_base[~dup], np.arange(n_base, n_orders)])
    item = np.concatenate([item_base[~dup], cycles.staple[pair]])
    n_lines = lo.size
    ml = m_o[lo]
    cons = cat.consumable[item]
    qty = np.where(cons, 1 + rng.poisson(CONSUMABLE_EXTRA_QTY, n_lines),
                   1 + (rng.random(n_lines) < OTHER_QTY2_SHARE)).astype(np.float64)
    list_value = cat.price[item] * qty
    peak_l = peak_o[lo]
    lo_share = np.where(peak_l, PROMO_PEAK[1], PROMO_ORDINARY[1])
    hi_share = np.where(peak_l, PROMO_PEAK[2], PROMO_ORDINARY[2])
    promo_share = lo_share + (hi_share - lo_share) * rng.random(n_lines)
    promo_share[rng.random(n_lines) >= np.where(peak_l, PROMO_PEAK[0], PROMO_ORDINARY[0])] = 0.0
    discount = np.round(list_value * (promo_share + coupon_share_o[lo]), 2)
    amount = np.round(list_value - discount, 2)
    category = cat.category[item]
    sec_l = sec_o[lo]

    # --- cancellations (whole orders, minutes after payment) and refunds (single lines, days later)
    canc_l = cancelled_o[lo]
    canc = np.flatnonzero(canc_l)
    canc_sec = sec_l[canc] + 60 + rng.exponential(1200, canc.size).astype(np.int64)
    refund_factor = np.array([c.refund_factor for c in CATEGORIES])
    p_ref = REFUND_BASE * pop.refund_prop[ml] * refund_factor[category]
    ref = np.flatnonzero((rng.random(n_lines) < p_ref) & ~canc_l)
    delay = (REFUND_DELAY_DAYS[0] + rng.exponential(REFUND_DELAY_DAYS[1], ref.size)) * DAY
    ref_sec = sec_l[ref] + delay.astype(np.int64)
    inside = ref_sec < n_days * DAY  # a refund after the window has not happened yet
    ref, ref_sec = ref[inside], ref_sec[inside]
    undone_l = canc_l.copy()
    undone_l[ref] = True

    rows = np.concatenate([np.arange(n_lines), canc, ref])
    sec = np.concatenate([sec_l, canc_sec, ref_sec])
    status = np.concatenate([np.zeros(n_lines, np.int8), np.full(canc.size, 2, np.int8), np.ones(ref.size, np.int8)])
    srt = argsort_seconds(sec)
    rows, sec, status = rows[srt], sec[srt], status[srt]
    return OrderLines(
        order_no=order_no_o[lo][rows], member=ml[rows], sec=sec, amount=amount[rows], item=item[rows],
        category=category[rows], quantity=qty[rows], discount=discount[rows], coupon=coupon_o[lo][rows],
        status=status, replenishment=is_rep_o[lo][rows], undone=undone_l[rows] & (status == 0),
        cycles=cycles, base_orders=n_base, replenishment_orders=int(pair.size),
    )


def expected_line_value(pop: Population, cat: Catalogue) -> np.ndarray:
    """Approximate expected list value (price x quantity, before discounts) of a member's base-order line."""
    tier_p = np.diff(np.c_[np.zeros(pop.n), pop.tier_cum], axis=1)          # (n, tiers)
    cons_share = np.array([c.consumable_share for c in CATEGORIES])
    e_qty = 1 + cons_share * CONSUMABLE_EXTRA_QTY + (1 - cons_share) * OTHER_QTY2_SHARE
    per_cat = tier_p @ cat.tier_mean_price.T                                 # (n, categories)
    return (pop.affinity * per_cat * e_qty[None, :N_CATEGORIES]).sum(axis=1)
