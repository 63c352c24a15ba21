"""One member's candidates and top-N as arrays end to end: the batch path's answer with a few compiled passes.

Why: for one member (the online request) the batch code in `recs.py` runs ~120 small numpy calls between the
compiled kernels (ranking the history, gathering and summing kNN neighbours, the union of four candidate lists,
two per-candidate ranks, the rules, the top-N, the reasons); at a few hundred rows each call's fixed cost and the
temporaries it allocates are most of the time. Here they are two numba loops (`_history_pass`, `_candidate_pass`),
one for the ranks, and a top-N pass over the scored candidates; the rules that do not depend on the member
(categories, item lists) are one boolean per item, computed at model load (`static_allowed`); reasons are written
only for the top-N rows.

Exactness (tested equal to the batch path on generated members, and on all Complete Journey test members by the
benchmark's check): every number is computed with the same operands and order as the numpy expression it replaces
(stable sorts are unique given the comparisons, sums are taken in the same order, transcendental functions stay in
numpy); inputs a loop cannot reproduce exactly (NaN among the values being sorted) make `candidates` return None and
the caller keeps the batch code.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable

import numpy as np

from .item_lookup import arrow_string_chunks
from .recs_rules import RulesConfig, _gap_text


def _min10(v: float) -> float:  # np.minimum(v, 10): NaN stays NaN
    if v != v:
        return v
    return v if v <= 10.0 else 10.0


def _history_pass(n_bought, n_cart, n_favorite, n_view, days_seen, rep):  # noqa: ANN001 (numba)
    """rep = `recs.repurchase_score` (same operations, same order) and the stable order of −rep; a negative first
    element of the order means a NaN score (the caller keeps the batch code)."""
    h = len(n_bought)
    neg = np.empty(h)
    bad = False
    for j in range(h):
        ds = days_seen[j]
        if ds != ds:
            ds = 1e6
        elif ds == np.inf:
            ds = _DBL_MAX
        elif ds == -np.inf:
            ds = -_DBL_MAX
        recency = 1.0 / (1.0 + ds)
        r = n_bought[j] + 0.1 * n_cart[j] + 0.05 * n_favorite[j] + 0.01 * _min10(n_view[j]) + 1e-3 * recency
        rep[j] = r
        neg[j] = -r
        if r != r:
            bad = True
    order = np.argsort(neg, kind="mergesort")
    if bad:
        order[:] = -1
    return order


def _candidate_pass(hi, order, n_hist, seed_w, nbr_idx, nbr_sim, n_knn, als_top, pop,  # noqa: ANN001 (numba)
                    ck, cs, cseed, cknn):
    """The union of history, ALS, kNN and popularity candidates of one member (keys = item positions, sorted;
    the strongest source per item), with the kNN score and seed of each. Returns the number of candidates, or −1
    when a kNN score is NaN (the caller keeps the batch code)."""
    # kNN contributions in the batch path's order: seed by seed (history order), neighbour slot by slot
    n_seeds = len(seed_w)
    k_max = nbr_idx.shape[1]
    kk = np.empty(n_seeds * k_max, np.int64)
    kw = np.empty(n_seeds * k_max)
    ks = np.empty(n_seeds * k_max, np.int64)
    nk = 0
    for s in range(n_seeds):
        it = hi[order[s]]
        for c in range(k_max):
            nb = nbr_idx[it, c]
            if nb >= 0:
                kk[nk] = nb
                kw[nk] = seed_w[s] * np.float64(nbr_sim[it, c])
                ks[nk] = it
                nk += 1
    uk = np.empty(nk, np.int64)
    usc = np.empty(nk)
    useed = np.empty(nk, np.int64)
    nu = _knn_loop(kk[:nk], kw[:nk], ks[:nk], uk, usc, useed) if nk else 0
    neg = np.empty(nu)
    for g in range(nu):
        if usc[g] != usc[g]:
            return -1
        neg[g] = -usc[g]
    knn_top = np.argsort(neg, kind="mergesort")[:n_knn]
    # the union: key · 4 + source sorted, the first (lowest source) of each key kept
    n_h = min(n_hist, len(order))
    tagged = np.empty(n_h + len(als_top) + len(knn_top) + len(pop), np.int64)
    t = 0
    for j in range(n_h):
        tagged[t] = hi[order[j]] * 4 + 0
        t += 1
    for j in range(len(knn_top)):
        tagged[t] = uk[knn_top[j]] * 4 + 1
        t += 1
    for j in range(len(als_top)):
        tagged[t] = als_top[j] * 4 + 2
        t += 1
    for j in range(len(pop)):
        tagged[t] = pop[j] * 4 + 3
        t += 1
    tagged.sort()
    nc = 0
    g = 0
    for j in range(len(tagged)):
        key = tagged[j] >> 2
        if nc and ck[nc - 1] == key:
            continue
        ck[nc] = key
        cs[nc] = tagged[j] & 3
        # the kNN score and seed of this key (uk is sorted): 0 and −1 when the key has no kNN contribution
        while g < nu and uk[g] < key:
            g += 1
        if g < nu and uk[g] == key:
            cknn[nc] = usc[g]
            cseed[nc] = useed[g]
        else:
            cknn[nc] = 0.0
            cseed[nc] = -1
        nc += 1
    return nc


def _rank_pass(als, knn, als_rank, knn_rank):  # noqa: ANN001 (numba)
    """Rank of each candidate's ALS and kNN score among the member's candidates (kNN rank NaN when the score is
    0), as `recs._scores_and_ranks` for one group; False when a score is NaN (the caller keeps the batch code)."""
    n = len(als)
    na = np.empty(n, np.float32)
    nk = np.empty(n)
    for r in range(n):
        if als[r] != als[r] or knn[r] != knn[r]:
            return False
        na[r] = -als[r]
        nk[r] = -knn[r]
    oa = np.argsort(na, kind="mergesort")
    ok = np.argsort(nk, kind="mergesort")
    for r in range(n):
        als_rank[oa[r]] = r
        knn_rank[ok[r]] = r if knn[ok[r]] > 0 else np.nan
    return True


def _top_pass(score, ci, days_last, n_bought, allowed, consumable, recent_days, top_n, sel):  # noqa: ANN001
    """The top-N allowed candidates by score (the stable order of −score, as `recs.group_rank`), into `sel`;
    returns how many, or −1 when a score of an allowed candidate is NaN (the caller keeps the batch code)."""
    n = len(score)
    idx = np.empty(n, np.int64)
    neg = np.empty(n)
    k = 0
    for r in range(n):
        it = ci[r]
        ok = allowed[it]
        if recent_days > 0 and n_bought[r] > 0:
            d = np.float64(days_last[r])
            if d == d and d < recent_days and not consumable[it]:
                ok = False
        if ok:
            if score[r] != score[r]:
                return -1
            idx[k] = r
            neg[k] = -score[r]
            k += 1
    o = np.argsort(neg[:k], kind="mergesort")
    m = min(top_n, k)
    for j in range(m):
        sel[j] = idx[o[j]]
    return m


def _same_strings_loop(data, offsets, first):  # noqa: ANN001 (numba)
    """True when every string data[offsets[j]:offsets[j+1]] has the bytes `first`."""
    n0 = len(first)
    for j in range(len(offsets) - 1):
        a = offsets[j]
        if offsets[j + 1] - a != n0:
            return False
        for k in range(n0):
            if data[a + k] != first[k]:
                return False
    return True


_DBL_MAX = np.finfo(np.float64).max


@functools.lru_cache(maxsize=1)
def _compiled() -> tuple[Callable[..., Any], ...]:
    """The loops compiled by numba (once per process; machine code cached on disk when the install allows)."""
    from .numba_loops import compile_loops
    from .recs_kernels import _knn_loop, _stable_order

    def build(jit: Callable[..., Any]) -> tuple[Callable[..., Any], ...]:
        env = dict(globals())
        env["_min10"] = jit(_min10, env)
        env["_stable_order"] = jit(_stable_order, env)
        env["_knn_loop"] = jit(_knn_loop, env)
        return (jit(_history_pass, env), jit(_candidate_pass, env), jit(_rank_pass, env), jit(_top_pass, env),
                jit(_same_strings_loop, env))

    return compile_loops(build, "one-member loops")


def history_order(n_bought: np.ndarray, n_cart: np.ndarray, n_favorite: np.ndarray, n_view: np.ndarray,
                  days_seen: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(repurchase score, its stable descending order) of one member's history rows, or None (a NaN score)."""
    rep = np.empty(len(n_bought))
    order = _compiled()[0](n_bought, n_cart, n_favorite, n_view, days_seen, rep)
    if len(order) and order[0] < 0:
        return None
    return rep, order


def candidates(*, hi: np.ndarray, order: np.ndarray, n_hist: int, seed_w: np.ndarray, nbr_idx: np.ndarray,
               nbr_sim: np.ndarray, n_knn: int, als_top: np.ndarray, pop: np.ndarray) -> tuple[np.ndarray, ...] | None:
    """(items, source, kNN seed, kNN score) of one member's candidates, sorted by item; None on a NaN kNN score.

    `seed_w` = log1p(rep) of the kNN seeds (the first `len(seed_w)` rows of `order`), computed by numpy."""
    fns = _compiled()
    cap = min(n_hist, len(order)) + len(als_top) + len(seed_w) * nbr_idx.shape[1] + len(pop)
    ck, cs = np.empty(cap, np.int64), np.empty(cap, np.int8)
    cseed, cknn = np.empty(cap, np.int64), np.empty(cap)
    nc = fns[1](hi, order, n_hist, seed_w, nbr_idx, nbr_sim, n_knn, als_top.astype(np.int64, copy=False),
                pop.astype(np.int64, copy=False), ck, cs, cseed, cknn)
    if nc < 0:
        return None
    return ck[:nc], cs[:nc], cseed[:nc], cknn[:nc]


def ranks(als: np.ndarray, knn: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(ALS rank, kNN rank) of one member's candidates (float64, kNN rank NaN where its score is 0), or None."""
    als_rank, knn_rank = np.empty(len(als)), np.empty(len(als))
    if not _compiled()[2](als, knn, als_rank, knn_rank):
        return None
    return als_rank, knn_rank


def top(score: np.ndarray, ci: np.ndarray, days_last: np.ndarray, n_bought: np.ndarray, allowed: np.ndarray,
        consumable: np.ndarray, rules: RulesConfig, top_n: int, apply_rules: bool) -> np.ndarray | None:
    """Rows of the top-N allowed candidates in rank order (`recs.top_items` for one member), or None (NaN)."""
    sel = np.empty(min(top_n, len(score)), np.int64)
    if apply_rules:
        m = _compiled()[3](score, ci, days_last, n_bought, allowed, consumable,
                           float(rules.exclude_recent_non_consumable_days), top_n, sel)
    else:
        m = _compiled()[3](score, ci, days_last, n_bought, np.ones(len(allowed), np.bool_),
                           consumable, 0.0, top_n, sel)
    return None if m < 0 else sel[:m]


def reasons_few(*, n_bought: np.ndarray, mean_gap: np.ndarray, n_engaged: np.ndarray, seed_item: list[str],
                category: list[str], source: np.ndarray) -> list[str]:
    """`recs_rules.reasons` for a handful of rows (the top-N of one member): the same texts, row by row."""
    out = []
    for nb, gap, eng, seed, cat, src in zip(n_bought.tolist(), mean_gap.tolist(), n_engaged.tolist(), seed_item,
                                            category, source.tolist()):
        if nb >= 2 and math.isfinite(gap):
            out.append(f"you buy this {_gap_text(gap)}")
        elif nb >= 1:
            out.append("you bought this before")
        elif eng > 0:
            out.append("you looked at this recently")
        elif src == 1 and _shown(seed):
            out.append(f"often bought with {seed}")
        elif src == 2:
            out.append("members with similar baskets buy this")
        elif _shown(cat):
            out.append(f"popular in {cat} this week")
        else:
            out.append("popular this week")
    return out


def string_array(values: list[str] | np.ndarray) -> Any:
    """A pandas string array (pyarrow storage) of a few Python/numpy strings, straight from a pyarrow array: the
    same array as `pd.array(values, dtype="string")` for str values (tested), ~40% less per call."""
    import pandas as pd
    import pyarrow as pa

    dtype = pd.StringDtype()
    if dtype.storage != "pyarrow":  # pragma: no cover - pandas configured for Python string storage
        return pd.array(values, dtype=dtype)
    return dtype.construct_array_type()(pa.chunked_array([pa.array(values, type=pa.large_string())]))


def arrow_single_value(values: Any) -> tuple[bool, Any] | None:
    """`frame_columns.single_value` for a pandas Arrow string array (one compiled pass comparing every id's bytes to
    the first, ~10× less than pandas' unique): (True, the id) when every value is the same non-null id, else
    (False, None); None when `values` is not Arrow strings (the caller uses `single_value`)."""
    chunks = arrow_string_chunks(values)
    if chunks is None:
        return None
    if not chunks or any(c.chunk.null_count for c in chunks):
        return False, None
    same = _compiled()[4]
    first = chunks[0]
    first_bytes = first.data[first.offsets[0]:first.offsets[1]].copy()
    for c in chunks:
        if not same(c.data, c.offsets, first_bytes):
            return False, None
    return True, first.chunk[0].as_py()


def _shown(value: str) -> bool:
    """`recs_rules._nonempty` for one string."""
    return value not in ("", "None", "nan")


def available() -> bool:
    """True when numba compiles the loops (run once on a tiny member, at model load); False: the batch code."""
    try:
        rep_order = history_order(np.ones(2), np.zeros(2), np.zeros(2), np.zeros(2), np.ones(2))
        assert rep_order is not None
        out = candidates(hi=np.array([0, 1], np.int64), order=rep_order[1], n_hist=2, seed_w=np.log1p(rep_order[0]),
                         nbr_idx=np.array([[1], [-1]], np.int32), nbr_sim=np.ones((2, 1), np.float32), n_knn=2,
                         als_top=np.array([1], np.int64), pop=np.array([0], np.int32))
        assert out is not None
        ranks(np.zeros(len(out[0]), np.float32), out[3])
        X = np.zeros((len(out[0]), 3), np.float32)  # feature columns are strided views of the candidate matrix
        top(np.zeros(len(out[0])), out[0], X[:, 1], X[:, 0], np.ones(2, bool), np.ones(2, bool), RulesConfig(), 10,
            True)
        _compiled()[4](np.zeros(2, np.uint8), np.array([0, 1, 2], np.int64), np.zeros(1, np.uint8))
    except Exception:  # noqa: BLE001 - any failure means: the batch code
        return False
    return True
