"""A member's ALS top-k items, defined exactly (the same items from every path) and found without exact scoring.

Definition: the ALS top k are the k items with the highest d_j = Σ_t u_t·y_jt, the member's float32 factors times
item j's float32 factors with every product and sum in float64, summed in the fixed order t = 0, 1, …, f−1
(`exact_scores`: one compiled loop, and a numpy twin giving the same bits: each product of two float32 is exact in
float64, so fused or not it rounds the same), ties broken by the lower item index, NaN ranked last. Nothing here
depends on BLAS kernels, threads or batch composition, so one member alone and the same member inside a batch get
the same items, in the same order.

Finding them: float32 BLAS scores s_j (cheap) narrow the catalogue to a superset, and only that is scored by d.
A float32 dot product of length f is within γ_f·‖u‖·‖y_j‖ of the exact one (γ_f = f·2⁻²⁴/(1 − f·2⁻²⁴), any
summation order, FMA or not; Σ|u_t·y_jt| ≤ ‖u‖·‖y_j‖), plus f·2⁻¹⁵⁰ when products underflow to subnormals; d_j
is within γ'_f·‖u‖·‖y_j‖ (the same for 2⁻⁵³; float64 cannot underflow here). With e_j = g·‖u‖·‖y_j‖ + (f+2)·2⁻¹⁴⁹,
g = 2γ_(f+2) (above γ_f + γ'_f by ≥ γ_2·‖u‖·‖y_j‖, far more than the float64 rounding of the norms and of
s_j ± e_j), every d_j lies in [s_j − e_j, s_j + e_j]. Let L be the k-th largest lower bound s_j − e_j:
k items have d ≥ L, so the k-th largest d is ≥ L, and an item whose upper bound s_j + e_j is below L has d_j < L:
strictly below every item of the top k (whatever the tie-break), so dropping it cannot change the answer. The
rest (≈ k plus the near-ties) are scored by d and ranked. A non-finite s_j gives no bound: the item stays (its
lower bound counts as −∞).

Batch (`top_k_rows`): per chunk the sgemm of all items, then one compiled pass per row (L by a heap, the superset,
d, the ranking). One member (`top_k`): the items sorted by norm once (at model load); ALS norms are very uneven, so
scoring them in that order by BLAS blocks, L over the scored prefix soon exceeds ‖u‖·‖y‖·(1 + 10⁻¹²) of the first
unscored item, an upper bound of d (≤ ‖u‖·‖y‖·(1 + γ'_f), γ'_64 ≈ 7·10⁻¹⁵) for all the unscored ones (they have
smaller norms; non-finite rows count as infinite norms, first), and the rest of the catalogue is never read (on
Complete Journey ~10k of 65,803 items at the median member, ~21k at the 99th percentile; the superset scored by d:
50 items at the median, 64 at most). Degenerate members (NaN factors, a zero vector: every score ties) never stop
early: everything is scored, then the same selection. The numpy paths (no numba) give the same items: the
definition does not depend on how the superset was found.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

FIRST_BLOCK = 4096  # items scored before the first bound check (the median member needs ~8k)
UP = 1.0 + 1e-12  # covers the float64 rounding of ‖u‖·‖y‖ (and of the norms) in the stopping rule


@dataclass(frozen=True)
class NormOrder:
    """Item factors sorted by decreasing norm (a C-contiguous float32 copy) with their positions and norms."""

    perm: np.ndarray  # (n,) int64: sorted position → item index
    factors: np.ndarray  # (n, f) float32, rows in `perm` order
    norms: np.ndarray  # (n,) float64, decreasing (non-finite rows: +inf, first)
    neg_norms: np.ndarray  # (n,) float64, increasing (for searchsorted)
    item_norms: np.ndarray  # (n,) float64: the same norms in item order (the batch path)
    gamma: float  # g: the relative rounding bound of s_j against d_j (see the module docstring)
    eta: float  # the absolute part of that bound (float32 underflow: (f + 2)·2⁻¹⁴⁹)


def norm_order(item_factors: np.ndarray) -> NormOrder:
    """Sort the item factors by norm once (at model load)."""
    f = item_factors.shape[1]
    norms = np.linalg.norm(item_factors.astype(np.float64), axis=1)
    norms[~np.isfinite(norms)] = np.inf  # no bound: scored first, never pruned
    perm = np.argsort(-norms, kind="stable")
    unit = 2.0 ** -24
    gamma = 2.0 * (f + 2) * unit / (1.0 - (f + 2) * unit)
    sorted_norms = norms[perm]
    _compiled()  # the loops compile here (model load), not on the first request
    return NormOrder(perm=perm.astype(np.int64), factors=np.ascontiguousarray(item_factors[perm], dtype=np.float32),
                     norms=sorted_norms, neg_norms=-sorted_norms, item_norms=norms, gamma=gamma,
                     eta=(f + 2) * 2.0 ** -149)


def top_k(order: NormOrder, u: np.ndarray, k: int, *, compiled: bool = True) -> np.ndarray:
    """One member's top-k item indices (the definition in the module docstring), best first.

    Scores the items by BLAS blocks in norm order and stops once the unscored items provably cannot reach the top;
    `compiled=False` (or numba missing): every item scored, numpy selection (the same items)."""
    n = len(order.perm)
    k = max(0, min(int(k), n))
    u = np.ascontiguousarray(u, dtype=np.float32).reshape(-1)
    fns = _compiled() if compiled else None
    if fns is None or k == 0:
        s = (order.factors @ u)[None]
        return _select_numpy(s, order.norms, order.gamma, order.eta, u[None], k, order.factors, order.perm)[0]
    push, select = fns[0], fns[1]
    un = float(np.linalg.norm(u.astype(np.float64)))
    g_un = order.gamma * un
    s = np.empty(n, np.float32)
    heap = np.empty(k, np.float64)
    scored = 0
    nxt = min(n, max(FIRST_BLOCK, k))
    while True:
        np.matmul(order.factors[scored:nxt], u, out=s[scored:nxt])
        push(s, order.norms, g_un, order.eta, scored, nxt, heap)
        scored = nxt
        if scored >= n:
            break
        low = float(heap[0])  # L over the scored prefix
        if un * order.norms[scored] * UP < low:  # every unscored item: d ≤ ‖u‖·‖y‖ < L
            break
        # the prefix whose norm bound can still reach L (at least one more block)
        cut = int(np.searchsorted(order.neg_norms, -(low / (un * UP)), side="right")) if low > 0 else n
        nxt = min(n, max(cut, scored + FIRST_BLOCK))
    out = np.empty(k, np.int64)
    select(s, order.norms, g_un, order.eta, scored, float(heap[0]), order.perm, order.factors, u, out)
    return out


def top_k_rows(order: NormOrder, item_factors: np.ndarray, u: np.ndarray, k: int, *,
               compiled: bool = True) -> np.ndarray:
    """(rows, k) top-k item indices of a chunk of members (rows of `u`), best first: the same items as `top_k`."""
    u = np.ascontiguousarray(u, dtype=np.float32)
    n = item_factors.shape[0]
    k = max(0, min(int(k), n))
    sc = u @ item_factors.T
    fns = _compiled() if compiled else None
    if fns is None or k == 0:
        return _select_numpy(sc, order.item_norms, order.gamma, order.eta, u, k, item_factors,
                             np.arange(n, dtype=np.int64))
    out = np.empty((len(u), k), np.int64)
    fns[2](np.ascontiguousarray(sc), order.item_norms, order.gamma, order.eta, u, np.arange(n, dtype=np.int64),
           np.ascontiguousarray(item_factors, dtype=np.float32), out)
    return out


def exact_scores(factors: np.ndarray, rows: np.ndarray, u: np.ndarray, *, compiled: bool = True) -> np.ndarray:
    """d for `factors[rows]`: float64 products summed in factor order 0..f−1 (the definition; compiled or numpy,
    the same bits)."""
    u = np.ascontiguousarray(u, dtype=np.float32).reshape(-1)
    rows = np.asarray(rows, dtype=np.int64)
    fns = _compiled() if compiled else None
    if fns is None:
        return _dots_numpy(factors, rows, u[None], np.zeros(len(rows), np.int64))
    out = np.empty(len(rows), np.float64)
    fns[3](np.ascontiguousarray(factors, dtype=np.float32), rows, u, out)
    return out


# --------------------------------------------------------------------------------------------------------------------
# compiled loops (plain Python here; `_compiled` builds the numba versions)

def _lower(s, e):  # noqa: ANN001 (numba): the lower bound s − e of d, −∞ when there is none (non-finite)
    a = np.float64(s) - e
    return a if -np.inf < a < np.inf else -np.inf


def _push(s, norms, g_un, eta, start, stop, heap):  # noqa: ANN001 (numba)
    """Keep the k largest lower bounds of s[:stop] in the min-heap `heap`, given that it holds those of s[:start]
    (filled from the first k when start is 0; stop ≥ k)."""
    k = len(heap)
    j0 = start
    if start == 0:
        for j in range(k):
            heap[j] = _lower(s[j], g_un * norms[j] + eta)
        for r in range(k // 2 - 1, -1, -1):
            _sift(heap, r, k)
        j0 = k
    for j in range(j0, stop):
        a = _lower(s[j], g_un * norms[j] + eta)
        if a > heap[0]:
            heap[0] = a
            _sift(heap, 0, k)


def _sift(heap, r, k):  # noqa: ANN001 (numba): restore the min-heap below position r
    while True:
        c = 2 * r + 1
        if c >= k:
            return
        if c + 1 < k and heap[c + 1] < heap[c]:
            c += 1
        if heap[c] < heap[r]:
            heap[c], heap[r] = heap[r], heap[c]
            r = c
        else:
            return


def _select(s, norms, g_un, eta, stop, low, items, factors, u, out):  # noqa: ANN001 (numba)
    """The top len(out) items among positions < stop: those whose upper bound s + e is not below `low` (L), scored
    by d and ranked by (−d, item index), NaN last."""
    cnt = 0
    for p in range(stop):
        cnt += not (np.float64(s[p]) + (g_un * norms[p] + eta) < low)
    pos = np.empty(cnt, np.int64)
    c = 0
    for p in range(stop):
        if not (np.float64(s[p]) + (g_un * norms[p] + eta) < low):
            pos[c] = p
            c += 1
    pos = pos[np.argsort(items[pos])]  # by item index, for the tie-break
    d = np.empty(cnt, np.float64)
    _dots(factors, pos, u, d)
    for c in range(cnt):
        d[c] = -d[c] if d[c] == d[c] else np.inf
    rank = np.argsort(d, kind="mergesort")  # stable: equal d keep the lower item first
    for c in range(len(out)):
        out[c] = items[pos[rank[c]]]


def _dots(factors, pos, u, out):  # noqa: ANN001 (numba): THE score d (the definition), rows `pos` of factors
    for c in range(len(pos)):
        p = pos[c]
        acc = 0.0
        for t in range(factors.shape[1]):
            acc += np.float64(u[t]) * np.float64(factors[p, t])
        out[c] = acc


def _rows(sc, norms, gamma, eta, u, items, factors, out):  # noqa: ANN001 (numba): `top_k_rows`, one pass per row
    k = out.shape[1]
    heap = np.empty(k, np.float64)
    for r in range(sc.shape[0]):
        un = 0.0
        for t in range(u.shape[1]):
            un += np.float64(u[r, t]) * np.float64(u[r, t])
        g_un = gamma * np.sqrt(un)
        _push(sc[r], norms, g_un, eta, 0, sc.shape[1], heap)
        _select(sc[r], norms, g_un, eta, sc.shape[1], heap[0], items, factors, u[r], out[r])


@functools.lru_cache(maxsize=1)
def _compiled() -> tuple[Callable[..., Any], ...] | None:
    """(_push, _select, _rows, _dots) compiled by numba (once per process; cached on disk when the install allows),
    or None."""
    from .numba_loops import compile_loops

    def build(jit: Callable[..., Any]) -> tuple[Callable[..., Any], ...]:
        env = dict(globals())
        for name in ("_lower", "_sift", "_dots"):
            env[name] = jit(globals()[name], env)
        env["_push"] = jit(_push, env)
        env["_select"] = jit(_select, env)
        fns = env["_push"], env["_select"], jit(_rows, env), env["_dots"]
        y = np.arange(8, dtype=np.float32).reshape(4, 2)  # compile now (model load), not on the first request
        u, items, norms = np.ones(2, np.float32), np.arange(4, dtype=np.int64), np.ones(4)
        s, heap, out = y @ u, np.empty(2), np.empty((1, 2), np.int64)
        fns[0](s, norms, 1e-6, 1e-44, 0, 4, heap)
        fns[1](s, norms, 1e-6, 1e-44, 4, heap[0], items, y, u, out[0])
        fns[2](s[None], norms, 1e-6, 1e-44, u[None], items, y, out)
        fns[3](y, items, u, np.empty(4))
        return fns

    try:
        return compile_loops(build, "ALS top-k loops")
    except (ImportError, RuntimeError):  # numba missing or cannot compile: numpy
        return None


# --------------------------------------------------------------------------------------------------------------------
# numpy (no numba): the same items

def _dots_numpy(factors: np.ndarray, rows: np.ndarray, u: np.ndarray, which: np.ndarray) -> np.ndarray:
    """d of `factors[rows[c]]` against member row `which[c]` of `u`: the compiled `_dots`' sums, term by term."""
    d = np.zeros(len(rows))
    for t in range(factors.shape[1]):
        d += u[which, t].astype(np.float64) * factors[rows, t].astype(np.float64)
    return d


def _select_numpy(sc: np.ndarray, norms: np.ndarray, gamma: float, eta: float, u: np.ndarray, k: int,
                  factors: np.ndarray, items: np.ndarray) -> np.ndarray:
    """(rows, k) top-k `items` of each row of the float32 scores `sc` (columns aligned with `factors`, `norms`,
    `items`): the same superset rule and ranking as the compiled `_select`, vectorised over the rows."""
    b, n = sc.shape
    if k == 0:
        return np.zeros((b, 0), np.int64)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf members or items: no bound, kept
        un = np.linalg.norm(u.astype(np.float64), axis=1)
        s = sc.astype(np.float64)
        e = (gamma * un)[:, None] * norms[None] + eta
        low = s - e
        low[~np.isfinite(low)] = -np.inf
        cut = np.partition(low, n - k, axis=1)[:, n - k]  # L per row
        r, p = np.nonzero(~(s + e < cut[:, None]))
        d = _dots_numpy(factors, p, u, r)
    key = np.where(np.isnan(d), np.inf, -d)
    o = np.lexsort((items[p], key, r))
    r, p = r[o], p[o]
    first = np.searchsorted(r, np.arange(b))
    take = (first[:, None] + np.arange(k)[None]).ravel()
    return items[p[take]].reshape(b, k)
