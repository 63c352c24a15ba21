"""The ranker's candidate features in two compiled loops: the same numbers as `recs._features_numpy`, less CPU.

Why: the numpy feature builder runs ~150 small array operations per call; for one member (~300 candidates, a few
hundred history rows) their fixed per-call cost is most of the ~0.6 ms it takes. Here one loop over the history rows
builds the member-level sums (in the same order as `np.bincount`, so the same float sums) and one loop over the
candidates writes the float32 feature matrix. The batch path runs the same loops over all members.

Exactness (tested equal to the numpy path on generated batches: empty histories, cold-start members, unknown items,
NaN/inf inputs): only +, −, ×, ÷, min/max and comparisons run in the loops, each with the same operands, order and
NaN rules as the numpy expression it replaces (IEEE division: `error_model="numpy"`); the transcendental functions
(log1p of item popularity and of member totals, the item trend) are computed by numpy itself, per item once at model
load (`ItemColumns`) and per member per call, so no libm differs.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

# the column order the candidate loop writes (must equal recs.FEATURES: checked where the kernel is chosen)
KERNEL_FEATURES: tuple[str, ...] = (
    "hist_n_bought", "hist_rep_score", "hist_days_last", "hist_days_first", "hist_mean_gap", "hist_due_ratio",
    "hist_share", "hist_n_view", "hist_n_cart", "hist_n_favorite", "hist_days_seen",
    "item_pop_recent", "item_pop_all", "item_trend", "item_repeat", "item_price_ratio",
    "als_score", "knn_score", "cat_affinity",
    "member_n_items", "member_total", "member_days_last", "hist_rate", "member_tenure",
    "hist_hl14", "hist_hl56", "hist_hl14_share", "hist_view_hl1", "hist_cart_hl1", "item_cycle", "hist_due_item",
    "als_rank", "knn_rank", "member_hl14",
)


@dataclass(frozen=True)
class ItemColumns:
    """Per-item feature values computed once at model load with the numpy expressions of the numpy path."""

    pop_recent_log: np.ndarray  # float32: np.log1p(item_pop_recent)
    pop_all_log: np.ndarray  # float32: np.log1p(item_pop_all)
    trend: np.ndarray  # float32: np.log((pop_recent + 1) / (pop_prev + 1))


def item_columns(item_pop_recent: np.ndarray, item_pop_prev: np.ndarray, item_pop_all: np.ndarray) -> ItemColumns:
    """The item-level transcendental features, once per model (the numpy path computes them per candidate)."""
    return ItemColumns(pop_recent_log=np.log1p(item_pop_recent), pop_all_log=np.log1p(item_pop_all),
                       trend=np.log((item_pop_recent + 1.0) / (item_pop_prev + 1.0)))


_DBL_MAX = np.finfo(np.float64).max


def _nan_to_num(x: float, nan: float) -> float:  # np.nan_to_num(x, nan=nan): ±inf → ±largest finite
    if x != x:
        return nan
    if x == np.inf:
        return _DBL_MAX
    if x == -np.inf:
        return -_DBL_MAX
    return x


def _maximum(a: float, b: float) -> float:  # np.maximum: NaN if either is NaN
    if a != a or b != b:
        return np.nan
    return a if a >= b else b


def _minimum(a: float, b: float) -> float:  # np.minimum: NaN if either is NaN
    if a != a or b != b:
        return np.nan
    return a if a <= b else b


def _member_loop(b, n_cat, m, hi, item_category, n_bought, days_last, days_first, spend, hl14,  # noqa: ANN001
                 m_total, m_items, m_max, m_days_last, m_tenure, m_line_value, m_hl14, cat_counts):
    """Member-level sums and extremes over the history rows (sorted by member), into the preallocated outputs."""
    m_spend = np.zeros(b)
    m_lines = np.zeros(b)
    tmp_last = np.full(b, np.inf)
    seen = np.zeros(b, np.bool_)
    for j in range(len(m)):
        k = m[j]
        nb = n_bought[j]
        m_total[k] += nb
        m_items[k] += 1.0 if nb > 0 else 0.0
        if seen[k]:
            m_max[k] = _maximum(m_max[k], nb)
            tmp_last[k] = _minimum(tmp_last[k], _nan_to_num(days_last[j], np.inf))
            m_tenure[k] = _maximum(m_tenure[k], _nan_to_num(days_first[j], 0.0))
        else:
            seen[k] = True
            m_max[k] = nb
            tmp_last[k] = _nan_to_num(days_last[j], np.inf)
            m_tenure[k] = _nan_to_num(days_first[j], 0.0)
        sp = spend[j]
        if sp == sp:
            m_spend[k] += sp
            m_lines[k] += nb
        c = item_category[hi[j]]
        if c >= 0:
            cat_counts[k * n_cat + c] += nb
        m_hl14[k] += _nan_to_num(hl14[j], 0.0)
    for k in range(b):
        # _group_reduce: op(op.reduceat(values), init) for members with rows, init for the others
        if seen[k]:
            m_max[k] = _maximum(m_max[k], 0.0)
            tmp_last[k] = _minimum(tmp_last[k], np.inf)
            m_tenure[k] = _maximum(m_tenure[k], 0.0)
        else:
            m_max[k] = 0.0
            m_tenure[k] = 0.0
        t = tmp_last[k]
        m_days_last[k] = t if (t == t and t != np.inf and t != -np.inf) else np.nan
        m_line_value[k] = m_spend[k] / _maximum(m_lines[k], 1e-9) if m_lines[k] > 0 else np.nan


def _candidate_loop(ck, cm, ci, hkey, n_bought, rep, days_last, days_first, days_seen, n_view, n_cart,  # noqa: ANN001
                    n_favorite, hl14, hl56, view_hl1, cart_hl1, item_category, pop_recent_log, pop_all_log, trend,
                    item_repeat, item_price, item_cycle, als, knn, als_rank, knn_rank, n_cat, m_total, m_max,
                    m_days_last, m_tenure, m_line_value, m_hl14, cat_counts, log_items, log_total, log_hl14, X):
    """One row of features per candidate (ck sorted; hkey sorted), written into X (rows, 34) float32."""
    nh = len(hkey)
    p = 0
    for r in range(len(ck)):
        key = ck[r]
        while p < nh and hkey[p] < key:
            p += 1
        inh = p < nh and hkey[p] == key
        k = cm[r]
        it = ci[r]
        if inh:
            nb, dl, df, ds = n_bought[p], days_last[p], days_first[p], days_seen[p]
            rp, nv, nc, nf = rep[p], n_view[p], n_cart[p], n_favorite[p]
            h14, h56, v1, c1 = hl14[p], hl56[p], view_hl1[p], cart_hl1[p]
        else:
            nb, dl, df, ds = 0.0, np.nan, np.nan, np.nan
            rp, nv, nc, nf = 0.0, 0.0, 0.0, 0.0
            h14, h56, v1, c1 = np.nan, np.nan, np.nan, np.nan
        gap = (df - dl) / _maximum(nb - 1, 1.0) if nb >= 2 else np.nan
        cat = item_category[it]
        cycle = np.float64(item_cycle[it])
        X[r, 0] = nb
        X[r, 1] = rp
        X[r, 2] = dl
        X[r, 3] = df
        X[r, 4] = gap
        X[r, 5] = dl / gap
        X[r, 6] = nb / _maximum(m_max[k], 1.0)
        X[r, 7] = nv
        X[r, 8] = nc
        X[r, 9] = nf
        X[r, 10] = ds
        X[r, 11] = pop_recent_log[it]
        X[r, 12] = pop_all_log[it]
        X[r, 13] = trend[it]
        X[r, 14] = item_repeat[it]
        X[r, 15] = np.float64(item_price[it]) / m_line_value[k]
        X[r, 16] = als[r]
        X[r, 17] = knn[r]
        X[r, 18] = (cat_counts[k * n_cat + cat] / _maximum(m_total[k], 1.0)) if cat >= 0 else np.nan
        X[r, 19] = log_items[k]
        X[r, 20] = log_total[k]
        X[r, 21] = m_days_last[k]
        X[r, 22] = 28.0 * nb / _maximum(_nan_to_num(df, 0.0), 28.0) if nb > 0 else 0.0
        X[r, 23] = m_tenure[k]
        X[r, 24] = h14
        X[r, 25] = h56
        X[r, 26] = h14 / _maximum(m_hl14[k], 1e-3)
        X[r, 27] = v1
        X[r, 28] = c1
        X[r, 29] = cycle
        X[r, 30] = dl / cycle
        X[r, 31] = als_rank[r]
        X[r, 32] = knn_rank[r]
        X[r, 33] = log_hl14[k]


def _stable_order(kk):  # noqa: ANN001 (numba)
    """`np.argsort(kk, kind="stable")` for int64 keys: one integer sort of (key − min)·2ᵇ + position when both fit
    in 62 bits (numba's stable argsort of integers is ~20× slower than this), else numba's merge sort."""
    n = len(kk)
    if n == 0:
        return np.empty(0, np.int64)
    lo = kk[0]
    hi = kk[0]
    for j in range(n):
        lo = min(lo, kk[j])
        hi = max(hi, kk[j])
    pbits = 0
    while (1 << pbits) < n:
        pbits += 1
    span = hi - lo  # no overflow for keys built from positions (≥ 0)
    kbits = 0
    while kbits < 63 and (span >> kbits) > 0:
        kbits += 1
    if lo < 0 or kbits + pbits > 62:
        return np.argsort(kk, kind="mergesort")
    packed = np.empty(n, np.int64)
    for j in range(n):
        packed[j] = ((kk[j] - lo) << pbits) | j
    packed.sort()
    mask = (np.int64(1) << pbits) - 1
    for j in range(n):
        packed[j] &= mask
    return packed


def _knn_loop(kk, kw, ks, uk, score, seed):  # noqa: ANN001 (numba)
    """Distinct keys of kk (sorted), the sum of their weights in input order (np.bincount's sums) and the seed
    with the largest weight (the first in input order among equal ones, NaN never preferred: lexsort's pick).
    Returns how many distinct keys were written."""
    order = _stable_order(kk)  # stable: equal keys keep their input order
    g = -1
    best = 0.0
    for t in range(len(order)):
        j = order[t]
        if g < 0 or kk[j] != uk[g]:
            g += 1
            uk[g] = kk[j]
            score[g] = 0.0
            seed[g] = ks[j]
            best = kw[j]
        elif kw[j] > best or (best != best and kw[j] == kw[j]):
            best = kw[j]
            seed[g] = ks[j]
        score[g] += kw[j]
    return g + 1


def _factor_rows_loop(item_factors, i, w, y, z):  # noqa: ANN001 (numba)
    """y[l] = item_factors[i[l]] as float64 and z[l] = y[l] · (w[l] − 1), in one pass."""
    f = item_factors.shape[1]
    for r in range(len(i)):
        scale = w[r] - 1.0
        for g in range(f):
            v = np.float64(item_factors[i[r], g])
            y[r, g] = v
            z[r, g] = v * scale


@functools.lru_cache(maxsize=1)
def _compiled() -> tuple[Callable[..., Any], ...]:
    """The loops compiled by numba (once per process; machine code cached on disk when the install allows)."""
    from .numba_loops import compile_loops

    def build(jit: Callable[..., Any]) -> tuple[Callable[..., Any], ...]:
        env = dict(globals())
        for h in (_nan_to_num, _maximum, _minimum, _stable_order):
            env[h.__name__] = jit(h, env)
        return (jit(_member_loop, env), jit(_candidate_loop, env), jit(_knn_loop, env),
                jit(_factor_rows_loop, env))

    return compile_loops(build, "feature loops")


def kernels_available(*, item_factors: np.ndarray, item_category: np.ndarray, items: ItemColumns,
                      item_repeat: np.ndarray, item_price: np.ndarray, item_cycle: np.ndarray) -> bool:
    """True when numba imports and compiles the loops, compiled here (model load, not the first request) for the
    model's array types by running each once on a two-row batch; False (the caller keeps numpy) on any failure."""
    try:
        two = np.array([0, min(1, len(item_factors) - 1)], np.int64)
        ones, zeros = np.ones(2), np.zeros(2)
        features(b=1, n_cat=1, hkey=two, hm=np.zeros(2, np.int64), hi=two, n_bought=ones, rep=ones,
                 days_last=ones, days_first=ones, days_seen=ones, n_view=zeros, n_cart=zeros, n_favorite=zeros,
                 spend=ones, hl14=ones, hl56=ones, view_hl1=zeros, cart_hl1=zeros,
                 item_category=np.minimum(item_category, 0), items=items, item_repeat=item_repeat,
                 item_price=item_price, item_cycle=item_cycle, ck=two, cm=np.zeros(2, np.int64), ci=two,
                 als=np.zeros(2, item_factors.dtype), knn=zeros, als_rank=zeros, knn_rank=zeros)
        knn_sums(two[::-1].copy(), ones, two)
        factor_rows(item_factors, two, ones)
    except Exception:  # noqa: BLE001 - any failure means: use numpy
        return False
    return True


def features(*, b: int, n_cat: int, hkey: np.ndarray, hm: np.ndarray, hi: np.ndarray, n_bought: np.ndarray,
             rep: np.ndarray, days_last: np.ndarray, days_first: np.ndarray, days_seen: np.ndarray,
             n_view: np.ndarray, n_cart: np.ndarray, n_favorite: np.ndarray, spend: np.ndarray, hl14: np.ndarray,
             hl56: np.ndarray, view_hl1: np.ndarray, cart_hl1: np.ndarray, item_category: np.ndarray,
             items: ItemColumns, item_repeat: np.ndarray, item_price: np.ndarray, item_cycle: np.ndarray,
             ck: np.ndarray, cm: np.ndarray, ci: np.ndarray, als: np.ndarray, knn: np.ndarray,
             als_rank: np.ndarray, knn_rank: np.ndarray) -> np.ndarray:
    """The (candidates, len(KERNEL_FEATURES)) float32 feature matrix (history rows sorted by member then item,
    candidates sorted by key = member · n_items + item)."""
    member_loop, candidate_loop = _compiled()[:2]
    m_total, m_items, m_max = np.zeros(b), np.zeros(b), np.zeros(b)
    m_days_last, m_tenure, m_line_value, m_hl14 = np.zeros(b), np.zeros(b), np.zeros(b), np.zeros(b)
    cat_counts = np.zeros(b * n_cat)
    member_loop(b, n_cat, hm, hi, item_category, n_bought, days_last, days_first, spend, hl14,
                m_total, m_items, m_max, m_days_last, m_tenure, m_line_value, m_hl14, cat_counts)
    X = np.empty((len(ck), len(KERNEL_FEATURES)), np.float32)
    candidate_loop(ck, cm, ci, hkey, n_bought, rep, days_last, days_first, days_seen, n_view, n_cart, n_favorite,
                   hl14, hl56, view_hl1, cart_hl1, item_category, items.pop_recent_log, items.pop_all_log,
                   items.trend, item_repeat, item_price, item_cycle, als, knn, als_rank, knn_rank, n_cat, m_total,
                   m_max, m_days_last, m_tenure, m_line_value, m_hl14, cat_counts, np.log1p(m_items),
                   np.log1p(m_total), np.log1p(m_hl14), X)
    return X


def knn_sums(kk: np.ndarray, kw: np.ndarray, ks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct keys sorted, summed weight per key, seed of the largest weight per key): what `np.unique`,
    `np.bincount` and `group_rank` give in the numpy path, in one pass."""
    n = len(kk)
    uk, score, seed = np.empty(n, np.int64), np.empty(n), np.empty(n, np.int64)
    g = _compiled()[2](kk.astype(np.int64, copy=False), kw.astype(np.float64, copy=False),
                       ks.astype(np.int64, copy=False), uk, score, seed)
    return uk[:g], score[:g], seed[:g]


def factor_rows(item_factors: np.ndarray, i: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Y, Z): the member's item factor rows as float64 (L, f) and Z = Y · (w − 1) row-wise, for the one-member
    ALS fold-in: `Z.T` holds the same numbers in the same memory layout as numpy's
    `Y.T * (w − 1)` (so the BLAS product that follows is the same call), without the gather/convert/scale passes."""
    y = np.empty((len(i), item_factors.shape[1]))
    z = np.empty_like(y)
    _compiled()[3](item_factors, i.astype(np.int64, copy=False), w.astype(np.float64, copy=False), y, z)
    return y, z
