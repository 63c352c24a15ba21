"""Candidate generators, fitted as of a cutoff: implicit ALS (BM25 confidence), item-item neighbours ("bought
together"), the member's repurchase history, and popularity (global, by category, by segment).

`fit_candidates` returns the serving arrays (`RecsArtifacts`) together with the fitted `implicit` models, which the
evaluation uses as the ALS-alone and item-kNN baselines. Only rows strictly before the cutoff are used.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from training.recs.rules import RulesConfig
from training.member_pyfunc.recs import (DEFAULT_PARAMS, HISTORY_DAYS, RecsArtifacts, bm25_confidence, strength,
                                         summarise_history)


class CandidateConfig(BaseModel):
    """Hyperparameters of the candidate generators (tuned on a temporal validation split)."""

    model_config = ConfigDict(extra="forbid")

    factors: int = Field(64, ge=2)
    regularization: float = Field(0.05, ge=0)
    iterations: int = Field(15, ge=1)
    als_alpha: float = Field(1.0, gt=0)
    bm25_k1: float = Field(100.0, gt=0)
    bm25_b: float = Field(0.8, ge=0, le=1)
    w_buy: float = 1.0
    w_cart: float = 0.5
    w_favorite: float = 0.3
    w_view: float = 0.1
    knn: str = Field("bm25", pattern="^(bm25|cosine)$")
    knn_k: int = Field(20, ge=1)
    pop_window_days: int = Field(28, ge=1)
    history_days: int | None = Field(
        HISTORY_DAYS, ge=1, description="days of member history summarised (None: all); the online recent_items "
                                        "table serves the same window, so training and serving features agree")
    pop_list: int = Field(100, ge=1)
    segment_column: str | None = "region"
    n_hist: int = 200
    n_als: int = 50
    n_knn: int = 50
    n_pop: int = 20
    knn_seeds: int = 40
    top_n: int = 10
    seed: int = 7


@dataclass
class FittedCandidates:
    """Serving arrays plus the training-side objects the baselines need."""

    art: RecsArtifacts
    history: pd.DataFrame  # the summary the models were fitted on (as of the cutoff)
    member_ids: np.ndarray  # row order of `user_items`
    user_items: sp.csr_matrix  # BM25 confidence, members × items
    als: Any  # implicit AlternatingLeastSquares
    knn: Any  # implicit ItemItemRecommender
    cutoff: pd.Timestamp


def _paid_lines(orders: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    o = orders[(orders["ordered_at"] < cutoff) & orders["item_id"].notna()]
    if "status" in o.columns:
        o = o[o["status"].fillna("paid") == "paid"]
    return o


def _buyers(lines: pd.DataFrame, index: pd.Index) -> np.ndarray:
    n = lines.groupby("item_id")["member_id"].nunique()
    return n.reindex(index, fill_value=0).to_numpy(np.float32)


def _top_lists(score: np.ndarray, groups: np.ndarray, n_groups: int, length: int) -> np.ndarray:
    """(n_groups, length) item indices by descending score within each group, -1 padded."""
    out = np.full((n_groups, length), -1, np.int32)
    ok = (groups >= 0) & (score > 0)
    idx = np.flatnonzero(ok)
    order = np.lexsort((-score[idx], groups[idx]))
    g = groups[idx][order]
    if len(g) == 0:
        return out
    starts = np.r_[0, np.flatnonzero(np.diff(g)) + 1]
    rank = np.arange(len(g)) - np.repeat(starts, np.diff(np.r_[starts, len(g)]))
    keep = rank < length
    out[g[keep], rank[keep]] = idx[order][keep]
    return out


def _neighbours(sim: sp.spmatrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k neighbours per item row of an item × item similarity matrix, self excluded, as padded arrays."""
    s = sp.coo_matrix(sim)
    off = (s.row != s.col) & (s.data > 0)
    r, c, v = s.row[off], s.col[off], s.data[off]
    n = sim.shape[0]
    idx = np.full((n, k), -1, np.int32)
    val = np.zeros((n, k), np.float32)
    if len(r) == 0:
        return idx, val
    order = np.lexsort((-v, r))
    r, c, v = r[order], c[order], v[order]
    starts = np.r_[0, np.flatnonzero(np.diff(r)) + 1]
    rank = np.arange(len(r)) - np.repeat(starts, np.diff(np.r_[starts, len(r)]))
    keep = rank < k
    idx[r[keep], rank[keep]] = c[keep]
    val[r[keep], rank[keep]] = v[keep]
    return idx, val


def item_cycles(hist: pd.DataFrame, item_index: pd.Index, min_repeaters: int = 2) -> np.ndarray:
    """Per item, the median over its repeat buyers of their mean days between purchases (NaN: too few repeaters).

    Lets the ranker ask "is this member due for this item?" even after a single purchase."""
    h = hist[hist["n_bought"] >= 2]
    days = (h["last_bought_at"] - h["first_bought_at"]).dt.total_seconds().to_numpy(float) / 86400.0
    gap = pd.Series(days / (h["n_bought"].to_numpy(float) - 1.0), index=h["item_id"].astype(str).to_numpy())
    gap = gap[np.isfinite(gap.to_numpy()) & (gap.to_numpy() > 0)]
    g = gap.groupby(level=0)
    med = g.median()[g.size() >= min_repeaters]
    return med.reindex(item_index).to_numpy(np.float32)


def fit_candidates(tables: dict[str, pd.DataFrame | None], cutoff: object, config: CandidateConfig | None = None,
                   rules: RulesConfig | None = None, history: pd.DataFrame | None = None) -> FittedCandidates:
    """Fit every candidate generator on the rows strictly before `cutoff`.

    `tables` holds contract frames: `orders` (required), optionally `events`, `items`, `members`. A precomputed
    `history` summary (from `summarise_history` at the same cutoff) can be passed to save time.
    """
    from implicit.als import AlternatingLeastSquares
    from implicit.nearest_neighbours import BM25Recommender, CosineRecommender
    from threadpoolctl import threadpool_limits

    cfg = config or CandidateConfig()
    rules = rules or RulesConfig()
    t = pd.Timestamp(cutoff)
    orders, events = tables["orders"], tables.get("events")
    items_tbl, members_tbl = tables.get("items"), tables.get("members")
    hist = history if history is not None else summarise_history(orders, events, as_of=t,
                                                                 window_days=cfg.history_days)
    if hist.empty:
        raise ValueError(f"no order lines or item events before cutoff {t}: nothing to learn recommendations from")
    p: dict[str, Any] = {**DEFAULT_PARAMS, **cfg.model_dump(include={
        "w_buy", "w_cart", "w_favorite", "w_view", "bm25_k1", "bm25_b", "als_alpha", "n_hist", "n_als", "n_knn",
        "n_pop", "knn_seeds", "top_n"})}
    p["als_reg"] = cfg.regularization
    member_ids = pd.unique(hist["member_id"].to_numpy())
    item_ids = np.sort(pd.unique(hist["item_id"].to_numpy()).astype(str))
    item_index = pd.Index(item_ids)
    m = pd.Index(member_ids).get_indexer(hist["member_id"]).astype(np.int64)
    i = item_index.get_indexer(hist["item_id"].astype(str)).astype(np.int64)
    n_m, n_i = len(member_ids), len(item_ids)
    s = strength(hist["n_bought"].to_numpy(float), hist["n_cart"].to_numpy(float),
                 hist["n_favorite"].to_numpy(float), hist["n_view"].to_numpy(float), p)
    df = np.bincount(i, weights=(s > 0).astype(float), minlength=n_i)
    idf = np.maximum(np.log(n_m) - np.log1p(df), 0.05).astype(np.float32)
    p["avg_len"] = float(np.bincount(m, weights=s, minlength=n_m).mean())
    conf = bm25_confidence(s, m, i, n_m, idf, p)
    user_items = sp.csr_matrix((conf.astype(np.float32), (m, i)), shape=(n_m, n_i))
    user_items.eliminate_zeros()
    with threadpool_limits(limits=1, user_api="blas"):
        als = AlternatingLeastSquares(factors=cfg.factors, regularization=cfg.regularization,
                                      iterations=cfg.iterations, alpha=1.0, random_state=cfg.seed,
                                      calculate_training_loss=False)
        als.fit(user_items, show_progress=False)
        binary = sp.csr_matrix((np.log1p(s).astype(np.float32), (m, i)), shape=(n_m, n_i))
        knn = (BM25Recommender(K=cfg.knn_k + 1) if cfg.knn == "bm25" else CosineRecommender(K=cfg.knn_k + 1))
        with warnings.catch_warnings():  # implicit's own BM25 weighting hands itself a COO matrix
            warnings.filterwarnings("ignore", message="Method expects CSR input")
            knn.fit(binary, show_progress=False)
    item_factors = np.asarray(als.item_factors, dtype=np.float32)
    nbr_idx, nbr_sim = _neighbours(knn.similarity, cfg.knn_k)

    # item statistics and popularity
    lines = _paid_lines(orders, t)
    lines = lines.assign(item_id=lines["item_id"].astype(str))
    w = pd.Timedelta(days=cfg.pop_window_days)
    pop_recent = _buyers(lines[lines["ordered_at"] >= t - w], item_index)
    pop_prev = _buyers(lines[(lines["ordered_at"] >= t - 2 * w) & (lines["ordered_at"] < t - w)], item_index)
    pop_all = _buyers(lines, item_index)
    nb = hist["n_bought"].to_numpy(float)
    buyers = np.bincount(i, weights=(nb > 0).astype(float), minlength=n_i)
    repeaters = np.bincount(i, weights=(nb >= 2).astype(float), minlength=n_i)
    prior = repeaters.sum() / max(buyers.sum(), 1.0)
    item_repeat = ((repeaters + 5.0 * prior) / (buyers + 5.0)).astype(np.float32)
    item_cycle = item_cycles(hist, item_index)
    if "amount" in lines.columns and lines["amount"].notna().any():
        price = lines.groupby("item_id")["amount"].median().reindex(item_index).to_numpy(np.float32)
    else:
        price = np.full(n_i, np.nan, np.float32)
    # categories: the items table wins, else the orders' category column
    cat_src = None
    if items_tbl is not None and "category" in items_tbl.columns:
        cat_src = items_tbl[["item_id", "category"]]
    elif "category" in orders.columns:
        cat_src = lines[["item_id", "category"]]
    if cat_src is not None:
        cat_map = cat_src.dropna().assign(item_id=lambda d: d["item_id"].astype(str)).drop_duplicates("item_id")
        cat_map = cat_map.set_index("item_id")["category"].astype(str).reindex(item_index)
        categories = np.sort(cat_map.dropna().unique().astype(str))
        item_category = pd.Index(categories).get_indexer(cat_map.fillna("\x00")).astype(np.int32)
    else:
        categories = np.zeros(0, dtype=str)
        item_category = np.full(n_i, -1, np.int32)
    consumable = np.full(n_i, -1, np.int8)
    if items_tbl is not None and "is_consumable" in items_tbl.columns:
        cons = items_tbl[["item_id", "is_consumable"]].dropna().assign(item_id=lambda d: d["item_id"].astype(str))
        cons = cons.drop_duplicates("item_id").set_index("item_id")["is_consumable"].reindex(item_index)
        consumable = np.where(cons.isna(), -1, cons.fillna(False).astype(bool).astype(np.int8)).astype(np.int8)
    pop_score = pop_recent + 1e-3 * pop_all
    pop_global = _top_lists(pop_score, np.zeros(n_i, np.int64), 1, cfg.pop_list)[0]
    pop_global = pop_global[pop_global >= 0]
    pop_category = _top_lists(pop_score, item_category.astype(np.int64), len(categories), cfg.pop_list)
    segments = np.zeros(0, dtype=str)
    pop_segment = np.zeros((0, cfg.pop_list), np.int32)
    seg_col = cfg.segment_column
    if seg_col and members_tbl is not None and seg_col in members_tbl.columns:
        seg = members_tbl[["member_id", seg_col]].dropna().drop_duplicates("member_id")
        sl = lines[["member_id", "item_id"]].merge(seg, on="member_id", how="inner")
        if len(sl):
            segments = np.sort(sl[seg_col].astype(str).unique())
            cnt = sl.assign(seg=pd.Index(segments).get_indexer(sl[seg_col].astype(str)),
                            ii=item_index.get_indexer(sl["item_id"]))
            cnt = cnt[cnt["ii"] >= 0].groupby(["seg", "ii"])["member_id"].nunique().reset_index()
            pop_segment = np.full((len(segments), cfg.pop_list), -1, np.int32)
            lists = _top_lists(cnt["member_id"].to_numpy(float), cnt["seg"].to_numpy(np.int64), len(segments),
                               cfg.pop_list)
            ii = cnt["ii"].to_numpy(np.int32)
            pop_segment = np.where(lists >= 0, ii[np.maximum(lists, 0)], -1).astype(np.int32)
    p["rules"] = rules.model_dump()
    p["as_of"] = t.isoformat()
    p["factors"] = cfg.factors
    p["history_days"] = cfg.history_days
    art = RecsArtifacts(
        item_ids=item_ids.astype(str), item_category=item_category, categories=categories.astype(str),
        item_price=price, item_pop_recent=pop_recent, item_pop_prev=pop_prev, item_pop_all=pop_all,
        item_repeat=item_repeat, item_consumable=consumable, item_factors=item_factors, item_idf=idf,
        nbr_idx=nbr_idx, nbr_sim=nbr_sim, pop_global=pop_global.astype(np.int32),
        pop_category=pop_category, segments=segments.astype(str), pop_segment=pop_segment, item_cycle=item_cycle,
        params=p)
    return FittedCandidates(art=art, history=hist, member_ids=member_ids.astype(str), user_items=user_items,
                            als=als, knn=knn, cutoff=t)
