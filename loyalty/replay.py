"""The single-member engine: one member's history replayed event by event in plain Python (serving path).

Same rules and the same integer arithmetic as the vectorised batch (`loyalty.batch`), written the direct way:
tiers by re-computing each condition from the member's rows, the ledger as a queue of lots consumed first in,
first out. It needs no pandas group-bys, so one member takes a millisecond or so, and it is an independent
implementation the tests compare the batch with on many random members.
"""
from __future__ import annotations

import calendar
import datetime as dt
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any


from loyalty.config import LoyaltyConfig, Tier
from loyalty.points import REDEEM, REVERSAL
from loyalty.tiers import DAY_US, NEVER, UNKNOWN

_BIG = 2 ** 50
_EPOCH = dt.datetime(1970, 1, 1)


def to_datetime(us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=us)


def from_datetime(d: dt.datetime) -> int:
    delta = d - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def add_months_us(us: int, months: int) -> int:
    """`us` plus calendar months, the day clipped to the month's end (what pandas' DateOffset(months=) does)."""
    d = to_datetime(us)
    y, m = divmod(d.month - 1 + months, 12)
    y += d.year
    day = min(d.day, calendar.monthrange(y, m + 1)[1])
    return from_datetime(d.replace(year=y, month=m + 1, day=day))


def _multiply(points: int, multiplier: float) -> int:
    """Scalar twin of `loyalty.points.multiply` (same float64 arithmetic)."""
    return int(math.floor(float(points) * multiplier + 1e-6))


def window_end_us(us: int, window: str) -> tuple[int | None, bool]:
    """Scalar twin of `loyalty.tiers.window_end`."""
    if window == "lifetime":
        return None, False
    if window == "rolling_12m":
        return add_months_us(us, 12), False
    return from_datetime(dt.datetime(to_datetime(us).year + 1, 1, 1)), True


@dataclass
class Order:
    code: str
    t: int
    cents: int = 0
    known: bool = True
    bonus: int = 0
    void_t: int = NEVER
    ends: dict[str, tuple[int | None, bool]] = field(default_factory=dict)
    states: list[tuple[int, int, int, bool]] = field(default_factory=list)  # (t, refunded, bonus_lost, void)
    deltas: list[tuple[int, int]] = field(default_factory=list)  # (t, cents given back) per refund time


def replay_ledger(credits: list[tuple[int, int, int]], debits: list[tuple[int, int, int]], as_of: int,
                  soon_us: int, valid: list[bool] | None = None) -> dict[str, Any]:
    """The ledger's plain definition for ONE member, event by event.

    credits: (time, points, expires_at); debits: (time, kind REVERSAL/REDEEM, points). At one instant: credits
    first, then expiry of lots with expires_at ≤ that instant, then debits by (kind, points). A redemption beyond
    the balance (or invalid) is rejected; a reversal beyond it is cut to the balance.
    """
    valid = valid if valid is not None else [True] * len(debits)
    lots: deque[list[int]] = deque()  # [expires_at, remaining] in earning order
    events = sorted([(t, 0, 0, p, e, True, i) for i, (t, p, e) in enumerate(credits)]
                    + [(t, 1, k, p, 0, v, i) for i, ((t, k, p), v) in enumerate(zip(debits, valid))],
                    key=lambda e: (e[0], e[1], e[2], e[3]))
    tot: dict[str, Any] = {"earned": 0, "redeemed": 0, "reversed": 0, "expired": 0, "rejected": 0}
    outcome: dict[int, tuple[int, str, str | None]] = {}  # debit index -> (applied, status, reason)
    last_reason = None

    def expire(now: int) -> None:
        while lots and lots[0][0] <= now:
            tot["expired"] += lots.popleft()[1]

    def consume(x: int) -> None:
        while x > 0:
            take = min(x, lots[0][1])
            lots[0][1] -= take
            x -= take
            if lots[0][1] == 0:
                lots.popleft()

    for t, is_debit, kind, pts, exp, ok, i in events:
        if not is_debit:
            lots.append([exp, pts])
            tot["earned"] += pts
            continue
        expire(t)
        avail = sum(r for _, r in lots)
        if kind == REDEEM:
            if not ok:
                tot["rejected"] += 1
                last_reason = "invalid value: redeem needs a positive whole number of points"
                outcome[i] = (0, "rejected", last_reason)
            elif pts > avail:
                tot["rejected"] += 1
                last_reason = f"redeem {pts} points exceeds the balance of {avail}"
                outcome[i] = (0, "rejected", last_reason)
            else:
                consume(pts)
                tot["redeemed"] += pts
                outcome[i] = (pts, "applied", None)
        else:
            take = min(pts, avail)
            consume(take)
            tot["reversed"] += take
            outcome[i] = (take, "applied", None) if take == pts else \
                (take, "clamped", "refund reversal cut to the remaining balance")
    expire(as_of)
    tot["balance"] = sum(r for _, r in lots)
    tot["expiring_soon"] = sum(r for e, r in lots if e <= soon_us)
    tot["last_rejection"] = last_reason
    tot["outcome"] = outcome
    return tot


class MemberReplay:
    """One member's rows (already limited to before as_of and deduplicated) → the batch's state columns."""

    def __init__(self, config: LoyaltyConfig, as_of: int, lines: list[dict], events: list[dict],
                 birth_month: int, joined: int | None, first_event: int | None):
        self.cfg = config
        self.T = as_of
        self.birth_month = birth_month
        self.joined = joined
        self.first_event = first_event
        self.tiers = config.ladder.tiers
        self.windows = {config.ladder.window} | {config.tier_window(t) for t in self.tiers}
        self._orders(lines)
        self.events = events

    # -- orders and refunds -----------------------------------------------------------------------------------
    def _orders(self, lines: list[dict]) -> None:
        orders: dict[str, Order] = {}
        for ln in lines:
            if ln["refund"]:
                continue
            o = orders.get(ln["order"])
            if o is None:
                o = orders[ln["order"]] = Order(ln["order"], ln["t"])
            o.t = min(o.t, ln["t"])
            o.cents += ln["cents"]
            o.known &= ln["known"]
            o.bonus += ln["bonus"]
        self.orphans = 0
        refunds: dict[str, list[dict]] = {}
        for ln in lines:
            if not ln["refund"]:
                continue
            o = orders.get(ln["order"])
            if o is None or ln["t"] < o.t:
                self.orphans += 1
                continue
            refunds.setdefault(ln["order"], []).append(ln)
        # bonus lines: (order, item) with a category bonus and an item id
        bonus_lines: dict[tuple[str, str], list[int]] = {}  # -> [cents, unknown, bonus]
        for ln in lines:
            if ln["refund"] or ln["bonus"] <= 0 or ln["item"] is None:
                continue
            b = bonus_lines.setdefault((ln["order"], ln["item"]), [0, 0, 0])
            b[0] += ln["cents"]
            b[1] |= not ln["known"]
            b[2] += ln["bonus"]
        for code, rs in refunds.items():
            o = orders[code]
            rs = sorted(rs, key=lambda r: (r["t"], r["cents"] if r["known"] else _BIG))
            cum = 0
            prev_clip = 0
            line_cum: dict[str, int] = {}
            crossed: set[str] = set()
            by_t: dict[int, list[int]] = {}  # t -> [delta, lost, void]
            for r in rs:
                amt = r["cents"] if r["known"] else _BIG
                cum += amt
                clip = min(cum, o.cents)
                delta, prev_clip = clip - prev_clip, clip
                void = cum >= (o.cents if o.known else _BIG)
                lost = 0
                key = (code, r["item"])
                if r["item"] is not None and key in bonus_lines and r["item"] not in crossed:
                    line_cum[r["item"]] = line_cum.get(r["item"], 0) + amt
                    bl = bonus_lines[key]
                    if line_cum[r["item"]] >= (_BIG if bl[1] else bl[0]):
                        crossed.add(r["item"])
                        lost = bl[2]
                g = by_t.setdefault(r["t"], [0, 0, 0])
                g[0] += delta
                g[1] += lost
                g[2] |= void
            refunded = lost_cum = 0
            voided = False
            for t in sorted(by_t):
                d, lo, vo = by_t[t]
                refunded += d
                lost_cum += lo
                voided |= bool(vo)
                o.states.append((t, refunded, lost_cum, voided))
                o.deltas.append((t, d))
                if voided and o.void_t == NEVER:
                    o.void_t = t
        self.orders = sorted(orders.values(), key=lambda o: o.t)
        for o in self.orders:
            for w in self.windows:
                o.ends[w] = window_end_us(o.t, w)

    # -- tiers ------------------------------------------------------------------------------------------------
    @staticmethod
    def _active(start: int, end: tuple[int | None, bool], T: int, inclusive: bool) -> bool:
        e, end_inc = end
        if not (start <= T if inclusive else start < T):
            return False
        if e is None or e <= start:
            return e is None
        return T < e if (inclusive or end_inc) else T <= e

    def _spend(self, T: int, w: str, inclusive: bool = False) -> tuple[int, bool]:
        cents, complete = 0, True
        for o in self.orders:
            end = o.ends[w]
            if self._active(o.t, end, T, inclusive):
                cents += o.cents
                complete &= o.known
            for t, d in o.deltas:
                if self._active(t, end, T, inclusive):
                    cents -= d
        return cents, complete

    def _order_count(self, T: int, w: str, inclusive: bool = False) -> int:
        n = 0
        for o in self.orders:
            end = o.ends[w]
            n += self._active(o.t, end, T, inclusive)
            if o.void_t != NEVER:
                n -= self._active(o.void_t, end, T, inclusive)
        return n

    def _interactions(self, T: int, w: str, types: tuple[str, ...], inclusive: bool = False) -> int:
        n = 0
        for e in self.events:
            if e["type"] in types:
                n += self._active(e["t"], window_end_us(e["t"], w), T, inclusive)
        return n

    def _conditions(self, tier: Tier, T: int, inclusive: bool) -> tuple[bool, bool]:
        w = self.cfg.tier_window(tier)
        true, false = True, False
        thr = tier.spend_threshold_cents()
        if thr is not None:
            cents, complete = self._spend(T, w, inclusive)
            ok = cents >= thr
            true &= ok
            false |= (not ok) and complete
        if tier.min_orders is not None:
            ok = self._order_count(T, w, inclusive) >= tier.min_orders
            true &= ok
            false |= not ok
        if tier.min_interactions is not None:
            ok = self._interactions(T, w, tier.interaction_types, inclusive) >= tier.min_interactions
            true &= ok
            false |= not ok
        return true, (not true) and (not false)

    def qualified(self, T: int, inclusive: bool = False) -> int:
        for i in range(len(self.tiers) - 1, 0, -1):
            sat, unk = self._conditions(self.tiers[i], T, inclusive)
            if sat:
                return i
            if unk:
                return UNKNOWN
        return 0

    def held(self, T: int) -> int:
        q = self.qualified(T)
        pol = self.cfg.ladder.downgrade
        if pol.policy == "immediate" or len(self.tiers) == 1:
            return q
        held = max(q, 0)
        tg = T - pol.grace_days * DAY_US
        if pol.policy == "grace":
            held = max(held, self.qualified(tg))
        types = {ty for tier in self.tiers if tier.min_interactions is not None for ty in tier.interaction_types}
        rises = [o.t for o in self.orders] + [e["t"] for e in self.events if e["type"] in types]
        for s in rises:
            if s < T and (pol.policy == "never" or s >= tg):
                held = max(held, self.qualified(s, inclusive=True))
        return UNKNOWN if q == UNKNOWN else held

    def _base(self, cents: int) -> int:
        """Scalar twin of `loyalty.points.base_points`."""
        p = self.cfg.points
        return (max(cents, 0) // p.unit_cents()) * p.points_per_unit

    # -- everything ---------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        cfg, T, p = self.cfg, self.T, self.cfg.points
        tier_mult = [t.benefits.points_multiplier for t in self.tiers]
        credits: list[tuple[int, int, int, str]] = []  # (t, points, expires_at, source)
        debits: list[tuple[int, int, int, bool, str]] = []  # (t, kind, points, valid, label)
        months = p.expiry.months
        exp_of = (lambda t: add_months_us(t, months)) if months else (lambda t: NEVER)
        pend_us = p.pending_days * DAY_US
        pending = 0
        for o in self.orders:
            mult = 1.0
            if p.apply_tier_multiplier:
                if all(x == tier_mult[0] for x in tier_mult):
                    mult *= tier_mult[0]
                else:
                    mult *= tier_mult[max(self.held(o.t), 0)]
            month = to_datetime(o.t).month
            if p.birthday_month_multiplier != 1.0 and self.birth_month > 0 and self.birth_month == month:
                mult *= p.birthday_month_multiplier
            earned = _multiply(self._base(o.cents) + o.bonus, mult)
            # credited once the confirmation window ends; refunds inside it lower what is credited
            confirm = o.t + pend_us
            at_confirm = before = earned
            for t, refunded, lost, void in o.states:
                remaining = 0 if void else self._base(o.cents - refunded) + max(o.bonus - lost, 0)
                after = _multiply(remaining, mult)
                if t < confirm:
                    at_confirm = after
                elif before - after > 0:
                    debits.append((t, REVERSAL, before - after, True, "refund_reversal"))
                before = after
            if confirm >= T:
                pending += at_confirm
            elif at_confirm > 0:
                credits.append((confirm, at_confirm, exp_of(confirm), "order"))
        acts = p.activities
        seen_once: set[str] = set()
        per_day: dict[tuple[str, int], int] = {}
        for e in sorted((e for e in self.events if e["type"] in acts), key=lambda e: (e["type"], e["t"])):
            a = acts[e["type"]]
            if a.once:
                if e["type"] in seen_once:
                    continue
                seen_once.add(e["type"])
            if a.max_per_day:
                k = (e["type"], e["t"] // DAY_US)
                if per_day.get(k, 0) >= a.max_per_day:
                    continue
                per_day[k] = per_day.get(k, 0) + 1
            if a.points > 0:
                credits.append((e["t"], a.points, exp_of(e["t"]), e["type"]))
        for e in self.events:
            if e["type"] == p.redeem_event:
                v = e["value"]
                ok = v is not None and math.isfinite(v) and v > 0 and math.floor(v) == v
                debits.append((e["t"], REDEEM, int(v) if ok else 0, ok, "redeem"))
        soon = T + p.expiring_soon_days * DAY_US
        led = replay_ledger([(t, pts, ex) for t, pts, ex, _ in credits], [(t, k, pts) for t, k, pts, _, _ in debits],
                            T, soon, [d[3] for d in debits])

        rank = self.held(T)
        K = len(self.tiers)
        nxt = UNKNOWN if rank == UNKNOWN else (rank + 1 if rank + 1 < K else UNKNOWN)
        spend_gap, orders_gap, inter_gap = math.nan, None, None
        if nxt != UNKNOWN:
            tier = self.tiers[nxt]
            w = cfg.tier_window(tier)
            thr = tier.spend_threshold_cents()
            if thr is not None:
                cents, complete = self._spend(T, w)
                spend_gap = max(thr - cents, 0) / 100.0 if (complete or cents >= thr) else math.nan
            else:
                spend_gap = 0.0
            orders_gap = max(tier.min_orders - self._order_count(T, w), 0) if tier.min_orders is not None else 0
            inter_gap = (max(tier.min_interactions - self._interactions(T, w, tier.interaction_types), 0)
                         if tier.min_interactions is not None else 0)
        q_cents, q_complete = self._spend(T, cfg.ladder.window)
        ben = self.tiers[max(rank, 0)].benefits

        vw = T - cfg.segments.value.window_days * DAY_US
        spend_w, orders_w, unknown_w = 0, 0, False
        for o in self.orders:
            if o.t >= vw:
                spend_w += o.cents - (o.states[-1][1] if o.states else 0)
                orders_w += o.void_t == NEVER
                unknown_w |= not o.known
        v, lc, s = cfg.segments.value, cfg.segments.lifecycle, cfg.segments.strategy
        if not unknown_w:
            value = "high" if spend_w >= round(v.high_spend * 100) else "mid" if spend_w >= round(v.mid_spend * 100) else "low"
        else:
            value = "high" if orders_w >= v.high_orders else "mid" if orders_w >= v.mid_orders else "low"
        last = max((o.t for o in self.orders), default=None)
        firsts = [x for x in (self.joined, min((o.t for o in self.orders), default=None), self.first_event)
                  if x is not None]
        first_seen = min(firsts) if firsts else None
        if first_seen is not None and first_seen >= T - lc.new_days * DAY_US:
            life = "new"
        elif last is not None:
            days = (T - last) / DAY_US
            life = "active" if days <= lc.active_days else "silent" if days <= lc.silent_days else "churned"
        else:
            since = (T - first_seen) / DAY_US if first_seen is not None else math.inf
            life = "silent" if since <= lc.silent_days else "churned"
        names = [t.name for t in self.tiers]
        return {
            "tier": None if rank == UNKNOWN else names[rank],
            "tier_rank": None if rank == UNKNOWN else rank,
            "tier_reason": ("spend unknown: orders without amounts (use an order-count ladder for this store)"
                            if rank == UNKNOWN else None),
            "next_tier": None if nxt == UNKNOWN else names[nxt],
            "spend_to_next_tier": None if math.isnan(spend_gap) else spend_gap,
            "orders_to_next_tier": orders_gap,
            "interactions_to_next_tier": inter_gap,
            "qualifying_spend": q_cents / 100.0 if q_complete else None,
            "qualifying_orders": self._order_count(T, cfg.ladder.window),
            "points_balance": led["balance"], "points_earned": led["earned"], "points_redeemed": led["redeemed"],
            "points_reversed": led["reversed"], "points_expired": led["expired"],
            "points_expiring_30d": led["expiring_soon"] if p.expiry.months else 0,
            "points_pending": pending,
            "redemptions_rejected": led["rejected"], "last_rejection_reason": led["last_rejection"],
            "discount_rate": ben.discount_rate, "points_multiplier": ben.points_multiplier,
            "priority_shipping": ben.priority_shipping, "dedicated_service": ben.dedicated_service,
            "birthday_gift": ben.birthday_gift, "member_day": ben.member_day,
            "value_segment": value, "lifecycle_segment": life,
            "strategy": s.high if value == "high" else s.mid if value == "mid" else s.low,
            "spend_12m": None if unknown_w else spend_w / 100.0, "orders_12m": orders_w,
            "last_order_at": last, "days_since_last_order": None if last is None else (T - last) / DAY_US,
            "orphan_refunds": self.orphans,
            "_credits": credits, "_debits": debits, "_outcome": led["outcome"],
        }
