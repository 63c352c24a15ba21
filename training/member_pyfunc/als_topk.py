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
generated factors, ties included.
"""
from __future__ import annotations

from dataclasses import dataclass

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
    return NormOrder(perm=perm.astype(np.int64), factors=np.ascontiguousarray(item_factors[perm], dtype=np.float32),
                     norms=sorted_norms, neg_norms=-sorted_norms, gamma=gamma)


def top_k_pruned(order: NormOrder, u: np.ndarray, k: int) -> np.ndarray | None:
    """Item indices of the k highest `u · y_j` (the same set as `argpartition(-(u @ Y.T), k)[:k]` over all items),
    or None when the pruned scores cannot guarantee that set (then score all items)."""
    n = len(order.perm)
    u = np.asarray(u, dtype=np.float32).reshape(-1)
    if not 0 < k < FIRST_BLOCK < n or not np.isfinite(u).all():
        return None
    un = float(np.linalg.norm(u.astype(np.float64)))
    if un == 0.0:
        return None  # every score is 0: all ties
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
