"""One member's top-k ALS items without scoring the whole catalogue, with the same result as scoring it all.

Why: the one-member request scored all items (65,803 × 64 float32 factors on Complete Journey: 16.8 MB read per
call, memory-bound, ~0.6 ms) to keep 50. A member's score for item j is u·y_j ≤ ‖u‖·‖y_j‖ (Cauchy–Schwarz), and
ALS item norms are very uneven (popular items large, the long tail tiny). With the items sorted by norm (a copy
made once at model load), the items scored first are the only ones that can reach the top: as soon as the k-th
best score so far exceeds ‖u‖·‖y‖ of every item not yet scored, the rest cannot enter (on Complete Journey ~8k
items at the median member, ~20k at the 99th percentile).

Exactness: the full path's set is the top k of float32 dot products computed by BLAS, whose rounding depends on
the kernel. A float32 dot product of length f is within γ_f·‖u‖·‖y‖ of the exact value (γ_f = f·2⁻²⁴/(1 − f·2⁻²⁴),
any summation order, FMA or not), so when every chosen item's score less 2γ·‖u‖·‖y‖ is above every other item's
score (or norm bound) plus the same, both computations pick the same set. Otherwise (a tie or near-tie at the k-th
place: ~2% of Complete Journey members, often items with identical factors; NaN factors; a catalogue too small to
prune) `top_k_pruned` returns None and the caller scores everything as before. Tested equal to the full path on
generated factors, ties included. The bookkeeping between the BLAS block products (a min-heap of the k best so far,
the final bound check) is two numba loops; the guarantee does not depend on how the pruned scores are selected, only
on the bound check, which is the same arithmetic (numpy partitions remain without numba).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

FIRST_BLOCK = 4096  # items scored before the first bound check (the median member needs ~8k)


@dataclass(frozen=True)
class NormOrder:
    """Item factors sorted by decreasing norm (a C-contiguous float32 copy) with their positions and norms."""

    perm: np.ndarray  # (n,) int64: sorted position → item index
    factors: np.ndarray  # (n, f) float32, rows in `perm` order
    norms: np.ndarray  # (n,) float64, decreasing
    neg_norms: np.ndarray  # (n,) float64, increasing (for searchsorted)
    gamma: float  # relative bound of the difference between two float32 dot products of length f (2·γ_f)


def norm_order(item_factors: np.ndarray) -> NormOrder:
    """Sort the item factors by norm once (at model load)."""
    f = item_factors.shape[1]
    norms = np.linalg.norm(item_factors.astype(np.float64), axis=1)
    perm = np.argsort(-norms, kind="stable")
    unit = 2.0 ** -24
    gamma = 2.0 * (f + 2) * unit / (1.0 - (f + 2) * unit)
    sorted_norms = norms[perm]
    _compiled()  # the bookkeeping loops compile here (model load), not on the first request
    return NormOrder(perm=perm.astype(np.int64), factors=np.ascontiguousarray(item_factors[perm], dtype=np.float32),
                     norms=sorted_norms, neg_norms=-sorted_norms, gamma=gamma)


def top_k_pruned(order: NormOrder, u: np.ndarray, k: int, *, compiled: bool = True) -> np.ndarray | None:
    """Item indices of the k highest `u · y_j` (the same set as `argpartition(-(u @ Y.T), k)[:k]` over all items),
    or None when the pruned scores cannot guarantee that set (then score all items).

    `compiled`: the bookkeeping between the BLAS block products (the running k-th score, the final bound check) in
    one numba pass per block (`_heap_push`, `_bound_check`) instead of partitions and temporary arrays; the same
    guarantee from the same scores (numpy when numba is missing)."""
    fns = _compiled() if compiled else None
    if fns is None:
        return _top_k_pruned_numpy(order, u, k)
    n = len(order.perm)
    member = _member_vector(u, k, n)
    if member is None:
        return None
    u, un = member
    push, check = fns[:2]
    s = np.empty(n, np.float32)
    heap_v = np.empty(k, np.float32)
    heap_i = np.empty(k, np.int64)
    scored = 0
    nxt = FIRST_BLOCK
    while True:
        np.matmul(order.factors[scored:nxt], u, out=s[scored:nxt])
        if not push(s, scored, nxt, heap_v, heap_i):
            return None  # a NaN score
        scored = nxt
        if scored >= n:
            break
        kth = float(heap_v[0])  # the k-th best score so far (the heap's root)
        reach = (kth - 2.0 * order.gamma * un * order.norms[0]) / (un * (1.0 + 1e-12))
        cut = int(np.searchsorted(order.neg_norms, -reach, side="right"))
        if cut <= scored:
            break
        nxt = min(n, max(cut, scored + FIRST_BLOCK))
    if not check(s, scored, heap_i, order.norms, order.gamma * un, un, n):
        return None
    return order.perm[heap_i]


def top_k_unique(s: np.ndarray, k: int) -> np.ndarray | None:
    """Positions of the k largest of the float32 scores `s` when that set is unique (no score equal to the k-th
    outside it, no NaN): then it is the set any exact selection returns, `argpartition(-s, k)[:k]` included; None
    otherwise (the caller runs argpartition, whose pick among tied scores is its own). One compiled pass."""
    fns = _compiled()
    if fns is None or not 0 < k < len(s):
        return None
    heap_v = np.empty(k, np.float32)
    heap_i = np.empty(k, np.int64)
    s = np.ascontiguousarray(s, dtype=np.float32)
    if not fns[0](s, 0, len(s), heap_v, heap_i) or fns[2](s, heap_v[0]) != k:
        return None
    return heap_i


def _count_at_least(s, v):  # noqa: ANN001 (numba): how many of s are ≥ v
    c = 0
    for j in range(len(s)):
        c += s[j] >= v
    return c


def _heap_push(s, start, stop, heap_v, heap_i):  # noqa: ANN001 (numba)
    """Keep the k largest of s[:stop] in the min-heap (heap_v, heap_i), given that it holds those of s[:start] (filled
    from the first k when start is 0). False when a score is NaN."""
    k = len(heap_v)
    j0 = start
    if start == 0:
        for j in range(k):
            heap_v[j] = s[j]
            heap_i[j] = j
            if s[j] != s[j]:
                return False
        for r in range(k // 2 - 1, -1, -1):
            _sift(heap_v, heap_i, r, k)
        j0 = k
    for j in range(j0, stop):
        v = s[j]
        if v != v:
            return False
        if v > heap_v[0]:
            heap_v[0] = v
            heap_i[0] = j
            _sift(heap_v, heap_i, 0, k)
    return True


def _sift(heap_v, heap_i, r, k):  # noqa: ANN001 (numba): restore the min-heap below position r
    while True:
        c = 2 * r + 1
        if c >= k:
            return
        if c + 1 < k and heap_v[c + 1] < heap_v[c]:
            c += 1
        if heap_v[c] < heap_v[r]:
            heap_v[c], heap_v[r] = heap_v[r], heap_v[c]
            heap_i[c], heap_i[r] = heap_i[r], heap_i[c]
            r = c
        else:
            return


def _bound_check(s, scored, chosen_idx, norms, g_un, un, n):  # noqa: ANN001 (numba)
    """The guarantee of `_top_k_pruned_numpy`: every chosen score less its rounding bound beats every other scored
    score plus its bound, and the norm bound of the first unscored item (the same float64 arithmetic)."""
    chosen = np.zeros(scored, np.bool_)
    low = np.inf
    for t in range(len(chosen_idx)):
        j = chosen_idx[t]
        chosen[j] = True
        low = min(low, np.float64(s[j]) - g_un * norms[j])
    high = -np.inf
    for j in range(scored):
        if not chosen[j]:
            high = max(high, np.float64(s[j]) + g_un * norms[j])
    if scored < n:
        high = max(high, un * norms[scored] * (1.0 + 1e-12) + g_un * norms[0])
    return low > high


@functools.lru_cache(maxsize=1)
def _compiled() -> tuple[Callable[..., Any], ...] | None:
    """The loops compiled by numba (once per process; cached on disk when the install allows), or None."""
    from .numba_loops import compile_loops

    def build(jit: Callable[..., Any]) -> tuple[Callable[..., Any], ...]:
        env = dict(globals())
        env["_sift"] = jit(_sift, env)
        fns = jit(_heap_push, env), jit(_bound_check, env), jit(_count_at_least, env)
        s = np.arange(4, dtype=np.float32)  # compile now (model load), not on the first request
        hv, hi = np.empty(2, np.float32), np.empty(2, np.int64)
        fns[0](s, 0, 4, hv, hi)
        fns[1](s, 4, hi, np.ones(4), 1e-6, 1.0, 5)
        fns[2](s, np.float32(1.0))
        return fns

    try:
        return compile_loops(build, "ALS top-k loops")
    except (ImportError, RuntimeError):  # numba missing or cannot compile: numpy bookkeeping
        return None


def _member_vector(u: np.ndarray, k: int, n: int) -> tuple[np.ndarray, float] | None:
    """The member's factors as float32 and their norm, or None when pruning cannot apply (k out of range, a catalogue
    too small to prune, non-finite factors, or a zero vector: every score 0, all ties)."""
    u = np.asarray(u, dtype=np.float32).reshape(-1)
    if not 0 < k < FIRST_BLOCK < n or not np.isfinite(u).all():
        return None
    un = float(np.linalg.norm(u.astype(np.float64)))
    return None if un == 0.0 else (u, un)


def _top_k_pruned_numpy(order: NormOrder, u: np.ndarray, k: int) -> np.ndarray | None:
    """`top_k_pruned` by numpy partitions (the reference the compiled bookkeeping is tested against)."""
    n = len(order.perm)
    member = _member_vector(u, k, n)
    if member is None:
        return None
    u, un = member
    scored = min(FIRST_BLOCK, n)
    parts = [order.factors[:scored] @ u]
    while scored < n:
        s = parts[0] if len(parts) == 1 else np.concatenate(parts)
        kth = float(np.partition(s, len(s) - k)[len(s) - k])
        # items whose norm bound (plus rounding) can still reach the k-th score: a prefix of the norm order
        # (the margin leaves room for the rounding bounds of the final check below)
        reach = (kth - 2.0 * order.gamma * un * order.norms[0]) / (un * (1.0 + 1e-12))
        cut = int(np.searchsorted(order.neg_norms, -reach, side="right"))
        if cut <= scored:
            break
        nxt = min(n, max(cut, scored + FIRST_BLOCK))
        parts.append(order.factors[scored:nxt] @ u)
        scored = nxt
    s = parts[0] if len(parts) == 1 else np.concatenate(parts)
    top = np.argpartition(-s, k)[:k]
    # the guarantee: every chosen score, less its rounding bound, beats every other score plus its bound and the
    # norm bound of the first unscored item
    err = order.gamma * un * order.norms[:scored]
    chosen = np.zeros(scored, bool)
    chosen[top] = True
    low = float(np.min(s[top] - err[top]))
    high = float(np.max(np.where(chosen, -np.inf, s + err)))
    if scored < n:
        high = max(high, un * order.norms[scored] * (1.0 + 1e-12) + err[0])
    if not low > high:
        return None
    return order.perm[top]
