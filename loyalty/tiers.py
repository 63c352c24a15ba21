"""Tier qualification, vectorised: metrics per window as interval streams, then the ladder as 3-valued logic.

Metrics a ladder can use, each over a window (lifetime, rolling 12 months, calendar year):
- spend: paid amount (cents) of orders placed in the window, minus what was refunded before the query time
  (a refund undoes the spend of *its* order, so it reduces the window the order belongs to);
- orders: paid orders placed in the window that were not fully refunded before the query time;
- interactions: events of the tier's `interaction_types` (reviews, shares, …) in the window.
A rolling-12-month window holds an order from its time until 12 months later; a calendar-year window until the
end of its year. Stores without prices (null amounts) make spend *unknown*: a spend condition is then true only
when the known spend already meets it, else unknown; a tier above an unknown condition makes the tier unknown (-1).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from loyalty.config import LoyaltyConfig, Tier, Window
from loyalty.timeline import Intervals, Stream

UNKNOWN = -1
DAY_US = 86_400_000_000


def window_end(t: np.ndarray, window: Window) -> tuple[np.ndarray | None, bool]:
    """End of the interval during which something at time t counts in `window`, and whether the end is exclusive
    of the query instant (calendar years) or not (rolling windows)."""
    if window == "lifetime":
        return None, False
    idx = pd.DatetimeIndex(np.asarray(t, dtype=np.int64).view("datetime64[us]"))
    if window == "rolling_12m":
        end = idx + pd.DateOffset(months=12)
        return np.asarray(end.as_unit("us").asi8, dtype=np.int64), False
    if window == "calendar_year":
        nxt = pd.to_datetime({"year": idx.year + 1, "month": 1, "day": 1})
        return nxt.astype("datetime64[us]").to_numpy().view(np.int64), True
    raise ValueError(f"unknown window {window!r}; expected lifetime, rolling_12m or calendar_year")


@dataclass(frozen=True)
class OrderFacts:
    """One row per paid order (what tiers and points need)."""

    m: np.ndarray          # member code
    t: np.ndarray          # order time (µs): earliest paid line
    cents: np.ndarray      # paid cents (known lines)
    known: np.ndarray      # all lines have an amount
    void_t: np.ndarray     # time the order became fully refunded (NEVER when it was not)
    # refunds that reduced spend: order row index, time, cents given back (clipped to what was paid)
    r_order: np.ndarray
    r_t: np.ndarray
    r_cents: np.ndarray


NEVER = np.iinfo(np.int64).max


class Qualifier:
    """Builds the streams a ladder needs once; evaluates tiers for any (member, time) queries."""

    def __init__(self, config: LoyaltyConfig, orders: OrderFacts, ev_m: np.ndarray, ev_t: np.ndarray,
                 ev_type: pd.Series | pd.Categorical | np.ndarray):
        self.config = config
        self.tiers = config.ladder.tiers
        self.K = len(self.tiers)
        self._orders = orders
        self._ev = (np.asarray(ev_m, dtype=np.int64), np.asarray(ev_t, dtype=np.int64), pd.Series(ev_type))
        self._streams: dict[tuple, Intervals] = {}
        windows = {config.ladder.window} | {config.tier_window(t) for t in self.tiers}
        self._ends = {w: window_end(orders.t, w) for w in windows}
        self._r_ends = {w: (None if e is None else e[orders.r_order], inc) for w, (e, inc) in self._ends.items()}

    # -- metric streams ---------------------------------------------------------------------------------------
    def _stream(self, key: tuple) -> Intervals:
        if key not in self._streams:
            self._streams[key] = self._build(key)
        return self._streams[key]

    def _build(self, key: tuple) -> Intervals:
        o = self._orders
        kind, window = key[0], key[1]
        end, inc = self._ends[window]
        if kind == "spend":
            r_end, _ = self._r_ends[window]
            m = np.concatenate([o.m, o.m[o.r_order]])
            s = np.concatenate([o.t, o.r_t])
            v = np.concatenate([o.cents, -o.r_cents])
            e = None if end is None else np.concatenate([end, r_end])
            return Intervals(m, s, v, e, inc)
        if kind == "unknown":
            u = ~o.known
            return Intervals(o.m[u], o.t[u], np.ones(int(u.sum()), dtype=np.int64), None if end is None else end[u], inc)
        if kind == "orders":
            vd = o.void_t != NEVER
            m = np.concatenate([o.m, o.m[vd]])
            s = np.concatenate([o.t, o.void_t[vd]])
            v = np.concatenate([np.ones(len(o.m), dtype=np.int64), -np.ones(int(vd.sum()), dtype=np.int64)])
            e = None if end is None else np.concatenate([end, end[vd]])
            return Intervals(m, s, v, e, inc)
        if kind == "interactions":
            ev_m, ev_t, ev_type = self._ev
            sel = ev_type.isin(list(key[2])).to_numpy(dtype=bool)
            ee, einc = window_end(ev_t[sel], window)
            return Intervals(ev_m[sel], ev_t[sel], np.ones(int(sel.sum()), dtype=np.int64), ee, einc)
        raise ValueError(key)

    def spend(self, m: np.ndarray, t: np.ndarray, window: Window, inclusive: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(known spend in cents, spend is complete) per query."""
        cents = self._stream(("spend", window)).before(m, t, inclusive)
        unk = self._stream(("unknown", window)).before(m, t, inclusive)
        return cents, unk == 0

    def orders(self, m: np.ndarray, t: np.ndarray, window: Window, inclusive: bool = False) -> np.ndarray:
        return self._stream(("orders", window)).before(m, t, inclusive)

    def interactions(self, m: np.ndarray, t: np.ndarray, window: Window, types: tuple[str, ...],
                     inclusive: bool = False) -> np.ndarray:
        return self._stream(("interactions", window, tuple(sorted(types)))).before(m, t, inclusive)

    # -- tiers ------------------------------------------------------------------------------------------------
    def conditions(self, tier: Tier, m: np.ndarray, t: np.ndarray, inclusive: bool = False,
                   memo: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(satisfied, unknown) for one tier's AND of conditions. `memo` keeps the metric values of these queries
        across tiers (tiers sharing a window read the same spend/orders once)."""
        memo = {} if memo is None else memo

        def metric(key: tuple, fn):  # noqa: ANN001, ANN202
            if key not in memo:
                memo[key] = fn()
            return memo[key]

        w = self.config.tier_window(tier)
        true = np.ones(len(m), dtype=bool)   # every condition known true
        false = np.zeros(len(m), dtype=bool)  # some condition known false
        thr = tier.spend_threshold_cents()
        if thr is not None:
            cents, complete = metric(("spend", w), lambda: self.spend(m, t, w, inclusive))
            ok = cents >= thr  # unknown amounts are ≥ 0: known spend meeting the bar is enough
            true &= ok
            false |= ~ok & complete
        if tier.min_orders is not None:
            ok = metric(("orders", w), lambda: self.orders(m, t, w, inclusive)) >= tier.min_orders
            true &= ok
            false |= ~ok
        if tier.min_interactions is not None:
            types = tuple(sorted(tier.interaction_types))
            ok = metric(("interactions", w, types),
                        lambda: self.interactions(m, t, w, types, inclusive)) >= tier.min_interactions
            true &= ok
            false |= ~ok
        return true, ~true & ~false

    def qualified(self, m: np.ndarray, t: np.ndarray, inclusive: bool = False) -> np.ndarray:
        """Tier rank each member qualifies for at t (rows strictly before t; at/before with `inclusive`)."""
        m = np.asarray(m, dtype=np.int64)
        rank = np.zeros(len(m), dtype=np.int64)
        decided = np.zeros(len(m), dtype=bool)
        memo: dict = {}
        for i in range(self.K - 1, 0, -1):
            sat, unk = self.conditions(self.tiers[i], m, t, inclusive, memo)
            s = sat & ~decided
            rank[s] = i
            decided |= s
            u = unk & ~decided
            rank[u] = UNKNOWN
            decided |= u
        return rank

    def held(self, m: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Tier held at t under the downgrade policy (immediate / grace / never)."""
        m = np.asarray(m, dtype=np.int64)
        t = np.asarray(t, dtype=np.int64)
        q = self.qualified(m, t)
        pol = self.config.ladder.downgrade
        if pol.policy == "immediate" or self.K == 1:
            return q
        # qualification only rises at paid orders and interactions: evaluate just after each such point
        pm, pt = self._rise_points()
        qp = self.qualified(pm, pt, inclusive=True)
        held = np.maximum(q, 0)
        if pol.policy == "grace":
            tg = t - pol.grace_days * DAY_US
            held = np.maximum(held, self.qualified(m, tg))
        for level in range(1, self.K):
            sel = qp >= level
            if not sel.any():
                break
            st = Stream(pm[sel], pt[sel], np.ones(int(sel.sum()), dtype=np.int64))
            cnt = st.before(m, t)
            if pol.policy == "grace":
                cnt = cnt - st.before(m, tg)
            held = np.where(cnt > 0, np.maximum(held, level), held)
        return np.where(q == UNKNOWN, UNKNOWN, held)

    def _rise_points(self) -> tuple[np.ndarray, np.ndarray]:
        o = self._orders
        ms, ts = [o.m], [o.t]
        types = {ty for tier in self.tiers if tier.min_interactions is not None for ty in tier.interaction_types}
        if types:
            ev_m, ev_t, ev_type = self._ev
            sel = ev_type.isin(sorted(types)).to_numpy(dtype=bool)
            ms.append(ev_m[sel])
            ts.append(ev_t[sel])
        return np.concatenate(ms).astype(np.int64), np.concatenate(ts).astype(np.int64)

    def gaps(self, m: np.ndarray, t: np.ndarray, rank: np.ndarray) -> dict[str, np.ndarray]:
        """What is still needed for the next tier: spend (yuan, NaN when top tier or unknown), orders and
        interactions (-1 when not applicable)."""
        n = len(m)
        spend_gap = np.full(n, np.nan)
        orders_gap = np.full(n, -1, dtype=np.int64)
        inter_gap = np.full(n, -1, dtype=np.int64)
        nxt = np.where(rank == UNKNOWN, UNKNOWN, rank + 1)
        for i in range(1, self.K):
            sel = nxt == i
            if not sel.any():
                continue
            tier = self.tiers[i]
            w = self.config.tier_window(tier)
            mm, tt = m[sel], t[sel]
            thr = tier.spend_threshold_cents()
            if thr is not None:
                cents, complete = self.spend(mm, tt, w)
                spend_gap[sel] = np.where(complete | (cents >= thr), np.maximum(thr - cents, 0) / 100.0, np.nan)
            else:
                spend_gap[sel] = 0.0
            orders_gap[sel] = (np.maximum(tier.min_orders - self.orders(mm, tt, w), 0)
                               if tier.min_orders is not None else 0)
            inter_gap[sel] = (np.maximum(tier.min_interactions - self.interactions(mm, tt, w, tier.interaction_types), 0)
                              if tier.min_interactions is not None else 0)
        return {"spend_to_next_tier": spend_gap, "orders_to_next_tier": orders_gap,
                "interactions_to_next_tier": inter_gap}
