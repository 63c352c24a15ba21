"""Vectorised as-of sums over per-member time streams (the engine under tiers and the points ledger).

A `Stream` holds points (member, time, value). `Stream.before(m, t)` returns, for every query, the sum of the
member's values at times strictly before `t` (or at/before with `inclusive=True`), using one sort of the stream and
binary searches, with no per-member loop. Values are integers (cents, counts, points), so sums are exact and the
single-member path reproduces the batch path bit for bit.

Keys pack (member, time) into one int64: whole-second times are used directly (relative seconds, 33 bits), and
streams with sub-second times fall back to ranking their distinct times. Either way comparisons are exact.
"""
from __future__ import annotations

import numpy as np

_SHIFT = 33
_MASK = (1 << _SHIFT) - 1
_SEC = 1_000_000


def _is_sorted(a: np.ndarray) -> bool:
    return len(a) < 2 or bool(np.all(a[1:] >= a[:-1]))


class Stream:
    """Points (member code, time in µs, int value) sorted once by (member, time)."""

    def __init__(self, m: np.ndarray, t: np.ndarray, v: np.ndarray):
        m = np.asarray(m, dtype=np.int64)
        t = np.asarray(t, dtype=np.int64)
        v = np.asarray(v, dtype=np.int64)
        if len(m) and int(m.max()) >= 2 ** (62 - _SHIFT):
            raise ValueError("too many members for the stream key")
        self.n = len(m)
        self.t0 = int(t.min() // _SEC) if len(t) else 0
        span = (int(t.max() // _SEC) - self.t0) if len(t) else 0
        self.whole_seconds = bool(np.all(t % _SEC == 0)) and span < 2 ** 32
        if self.whole_seconds:
            self.times = None
            rank = t // _SEC - self.t0
        else:
            self.times, rank = np.unique(t, return_inverse=True)
        key = (m << _SHIFT) | rank.astype(np.int64)
        order = np.argsort(key, kind="stable")  # O(n) when the points come sorted
        self.keys = key[order]
        self.cum = np.concatenate([[0], np.cumsum(v[order])]).astype(np.int64)
        self._members = self.keys >> _SHIFT

    def __len__(self) -> int:
        return self.n

    def _rank(self, t: np.ndarray, inclusive: bool) -> np.ndarray:
        """r such that a stream time s satisfies s < t (s ≤ t when inclusive) iff rank(s) < r."""
        if self.times is not None:
            return np.searchsorted(self.times, t, side="right" if inclusive else "left").astype(np.int64)
        if inclusive:
            r = np.floor_divide(t, _SEC) - self.t0 + 1
        else:
            r = -np.floor_divide(-t, _SEC) - self.t0  # ceil
        return np.clip(r, 0, _MASK)

    def before(self, m: np.ndarray, t: np.ndarray, inclusive: bool = False) -> np.ndarray:
        """Sum of the member's values at times < t (≤ t when `inclusive`), one answer per query."""
        m = np.asarray(m, dtype=np.int64)
        if self.n == 0 or len(m) == 0:
            return np.zeros(len(m), dtype=np.int64)
        t = np.asarray(t, dtype=np.int64)
        q = (m << _SHIFT) | self._rank(t, inclusive)
        lo_q = m << _SHIFT
        if _is_sorted(q):
            hi = np.searchsorted(self.keys, q, side="left")
            lo = np.searchsorted(self.keys, lo_q, side="left")
        else:  # binary searches with sorted needles are far more cache friendly
            order = np.argsort(q, kind="stable")
            hi = np.empty(len(q), dtype=np.int64)
            lo = np.empty(len(q), dtype=np.int64)
            hi[order] = np.searchsorted(self.keys, q[order], side="left")
            lo[order] = np.searchsorted(self.keys, lo_q[order], side="left")
        return self.cum[hi] - self.cum[lo]


class Intervals:
    """Values active on an interval per member: from a start time (counted once strictly passed, like any row) to
    an end time. `before(m, T)` sums values of intervals active at T.

    Rolling windows end *after* their last instant (`end_inclusive=False`: active while T ≤ end); calendar windows
    end at the next period's first instant (`end_inclusive=True`: active while T < end). No end = lifetime.
    """

    def __init__(self, m: np.ndarray, start: np.ndarray, v: np.ndarray, end: np.ndarray | None = None,
                 end_inclusive: bool = False):
        m = np.asarray(m, dtype=np.int64)
        start = np.asarray(start, dtype=np.int64)
        v = np.asarray(v, dtype=np.int64)
        self.end_inclusive = end_inclusive
        self.ends: Stream | None = None
        if end is not None:
            end = np.asarray(end, dtype=np.int64)
            keep = end > start  # an interval ending at or before its start is never active
            if not keep.all():
                m, start, v, end = m[keep], start[keep], v[keep], end[keep]
            self.ends = Stream(m, end, v)
        self.starts = Stream(m, start, v)

    def before(self, m: np.ndarray, t: np.ndarray, inclusive: bool = False) -> np.ndarray:
        out = self.starts.before(m, t, inclusive)
        if self.ends is not None:
            out = out - self.ends.before(m, t, inclusive or self.end_inclusive)
        return out


def member_time_order(m: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Permutation sorting rows by (member, time); ties keep their input order."""
    m = np.asarray(m, dtype=np.int64)
    t = np.asarray(t, dtype=np.int64)
    if len(t) == 0:
        return np.zeros(0, dtype=np.int64)
    t0 = int(t.min() // _SEC)
    if bool(np.all(t % _SEC == 0)) and int(t.max() // _SEC) - t0 < 2 ** 32 and int(m.max()) < 2 ** (62 - _SHIFT):
        return np.argsort((m << _SHIFT) | (t // _SEC - t0), kind="stable")
    return np.lexsort((t, m))


def group_time_order(m: np.ndarray, g: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Permutation sorting rows by (member, small group code < 64, time); ties keep their input order."""
    m = np.asarray(m, dtype=np.int64)
    g = np.asarray(g, dtype=np.int64)
    t = np.asarray(t, dtype=np.int64)
    if len(t) == 0:
        return np.zeros(0, dtype=np.int64)
    t0 = int(t.min() // _SEC)
    if (bool(np.all(t % _SEC == 0)) and int(t.max() // _SEC) - t0 < 2 ** 32 and int(g.max()) < 64
            and int(m.max()) < 2 ** (62 - _SHIFT - 6)):
        return np.argsort((((m << 6) | g) << _SHIFT) | (t // _SEC - t0), kind="stable")
    return np.lexsort((t, g, m))


def rank_in_segment(starts: np.ndarray) -> np.ndarray:
    """0, 1, 2, … within each segment (a segment begins where `starts` is True)."""
    idx = np.arange(len(starts))
    return idx - np.maximum.accumulate(np.where(starts, idx, 0))


def segment_starts(members: np.ndarray) -> np.ndarray:
    """Boolean mask of the first row of each member (rows sorted by member)."""
    members = np.asarray(members)
    if len(members) == 0:
        return np.zeros(0, dtype=bool)
    return np.r_[True, members[1:] != members[:-1]]


def segment_cummax(values: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Running maximum restarting at each member; rows must be sorted by member. Values must lie in ±2^36."""
    values = np.asarray(values, dtype=np.int64)
    if len(values) == 0:
        return values
    lim = 2 ** 36
    if values.max() >= lim or values.min() <= -lim:
        raise ValueError("segment_cummax: values out of range")
    dense = np.cumsum(segment_starts(members), dtype=np.int64) - 1
    if dense[-1] >= 2 ** 25:
        raise ValueError("segment_cummax: too many members in one call")
    off = dense * np.int64(2 * lim + 1)
    return np.maximum.accumulate(values + off) - off


def segment_cumsum(values: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at each member; rows must be sorted by member."""
    values = np.asarray(values, dtype=np.int64)
    if len(values) == 0:
        return values
    cs = np.cumsum(values)
    base = np.maximum.accumulate(np.where(segment_starts(members), np.arange(len(values)), 0))
    return cs - (cs[base] - values[base])
