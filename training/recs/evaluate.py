"""Evaluation on a time split: precision/recall/NDCG/MAP@k, catalogue coverage, every baseline on the same split,
and a paired bootstrap 95% interval of the gain over the best baseline.

The population is the members who buy something in the test window [cutoff, cutoff + horizon) and were seen
before the cutoff or not (cold-start members count too: they get the popularity fallback).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from training.recs.candidates import FittedCandidates

METRICS: tuple[str, ...] = ("precision_at_10", "recall_at_10", "ndcg_at_10", "map_at_10")


def _check_recs(recs: pd.DataFrame) -> None:
    missing = {"member_id", "rank", "item_id"} - set(recs.columns)
    if missing:
        raise ValueError(f"recommendations are missing column(s) {sorted(missing)}")


def per_member_metrics(recs: pd.DataFrame, truth: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """One row per member of `truth` (member_id, item_id: items bought in the test window) with precision, recall,
    NDCG and MAP at k (binary relevance; members without recommendations score 0)."""
    _check_recs(recs)
    t = truth[["member_id", "item_id"]].astype({"member_id": "string", "item_id": "string"}).drop_duplicates()
    n_rel = t.groupby("member_id").size().rename("n_rel")
    r = recs[recs["rank"] <= k][["member_id", "rank", "item_id"]].astype({"member_id": "string",
                                                                          "item_id": "string"})
    r = r[r["member_id"].isin(n_rel.index)]
    hits = r.merge(t.assign(hit=1), on=["member_id", "item_id"], how="left")
    hits["hit"] = hits["hit"].fillna(0).astype(float)
    hits = hits.sort_values(["member_id", "rank"])
    hits["cum_hits"] = hits.groupby("member_id")["hit"].cumsum()
    hits["dcg"] = hits["hit"] / np.log2(hits["rank"] + 1.0)
    hits["ap_term"] = hits["hit"] * hits["cum_hits"] / hits["rank"]
    g = hits.groupby("member_id").agg(n_hits=("hit", "sum"), dcg=("dcg", "sum"), ap=("ap_term", "sum"))
    out = pd.DataFrame(index=n_rel.index).join(g).fillna(0.0).join(n_rel)
    discounts = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))
    idcg = discounts[np.minimum(out["n_rel"].to_numpy(), k) - 1]
    denom = np.minimum(out["n_rel"].to_numpy(), k)
    return pd.DataFrame({
        "precision_at_10" if k == 10 else f"precision_at_{k}": out["n_hits"] / k,
        "recall_at_10" if k == 10 else f"recall_at_{k}": out["n_hits"] / out["n_rel"],
        "ndcg_at_10" if k == 10 else f"ndcg_at_{k}": out["dcg"] / idcg,
        "map_at_10" if k == 10 else f"map_at_{k}": out["ap"] / denom,
    }, index=out.index)


def summarise(per_member: pd.DataFrame, recs: pd.DataFrame, n_catalogue: int) -> dict[str, float]:
    """Mean metrics plus catalogue coverage (share of the catalogue appearing in anyone's top list)."""
    out = {c: float(per_member[c].mean()) for c in per_member.columns}
    out["coverage"] = float(recs["item_id"].nunique() / max(n_catalogue, 1))
    return out


def bootstrap_gain(model: pd.Series, baseline: pd.Series, *, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Paired bootstrap over members of mean(model − baseline): the 95% interval."""
    d = (model - baseline.reindex(model.index).fillna(0.0)).to_numpy(float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(n_boot, len(d)))
    means = d[idx].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def precision_recall_curve(recs: pd.DataFrame, truth: pd.DataFrame, ks: tuple[int, ...] = (1, 2, 3, 5, 10, 20)
                           ) -> pd.DataFrame:
    """Mean precision@k and recall@k for several k (for the precision@k plot)."""
    rows = []
    for k in ks:
        pm = per_member_metrics(recs, truth, k=k)
        rows.append({"k": k, "precision": float(pm.iloc[:, 0].mean()), "recall": float(pm.iloc[:, 1].mean())})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------------------------
# baselines (every one on the same split and population)

def _frame(members: np.ndarray, items: np.ndarray) -> pd.DataFrame:
    """(b, k) item-id matrix (empty string = none) → long recs frame."""
    b, k = items.shape
    df = pd.DataFrame({"member_id": np.repeat(members, k), "rank": np.tile(np.arange(1, k + 1), b),
                       "item_id": items.ravel()})
    return df[df["item_id"] != ""].reset_index(drop=True)


def popularity_baseline(fc: FittedCandidates, members: np.ndarray, k: int = 10) -> pd.DataFrame:
    """The k items most members bought before the cutoff, for everyone."""
    top = np.argsort(-fc.art.item_pop_all, kind="stable")[:k]
    return _frame(members, np.broadcast_to(fc.art.item_ids[top], (len(members), len(top))))


def repurchase_baseline(fc: FittedCandidates, members: np.ndarray, k: int = 10) -> pd.DataFrame:
    """The member's most frequently bought items (ties: most recent first), filled with global popularity."""
    h = fc.history[fc.history["n_bought"] > 0]
    h = h[h["member_id"].isin(members)].sort_values(["member_id", "n_bought", "last_bought_at"],
                                                     ascending=[True, False, False])
    h = h.assign(rank=h.groupby("member_id").cumcount() + 1)
    own = h[h["rank"] <= k][["member_id", "rank", "item_id"]]
    pop = popularity_baseline(fc, members, k)
    fill = pop.merge(own[["member_id", "item_id"]].assign(_own=1), on=["member_id", "item_id"], how="left")
    fill = fill[fill["_own"].isna()].drop(columns="_own")
    fill = fill.assign(rank=fill["rank"] + 1000)
    both = pd.concat([own, fill]).sort_values(["member_id", "rank"])
    both["rank"] = both.groupby("member_id").cumcount() + 1
    return both[both["rank"] <= k].reset_index(drop=True)


def _implicit_recs(model: Any, fc: FittedCandidates, members: np.ndarray, k: int, filter_bought: bool
                   ) -> pd.DataFrame:
    from threadpoolctl import threadpool_limits

    pos = pd.Index(fc.member_ids).get_indexer(members)
    known = pos >= 0
    out = [popularity_baseline(fc, members[~known], k)]
    if known.any():
        rows = pos[known]
        with threadpool_limits(limits=1, user_api="blas"):
            ids, _ = model.recommend(rows, fc.user_items[rows], N=k, filter_already_liked_items=filter_bought)
        ids = np.asarray(ids)
        items = np.where(ids >= 0, fc.art.item_ids[np.maximum(ids, 0)], "")
        out.append(_frame(members[known], items))
    return pd.concat(out, ignore_index=True)


def als_baseline(fc: FittedCandidates, members: np.ndarray, k: int = 10, filter_bought: bool = True
                 ) -> pd.DataFrame:
    """ALS alone (implicit's recommend); unknown members get popularity."""
    return _implicit_recs(fc.als, fc, members, k, filter_bought)


def knn_baseline(fc: FittedCandidates, members: np.ndarray, k: int = 10, filter_bought: bool = False
                 ) -> pd.DataFrame:
    """Item-kNN alone (implicit's ItemItemRecommender); unknown members get popularity."""
    return _implicit_recs(fc.knn, fc, members, k, filter_bought)


BASELINES: dict[str, Callable[..., pd.DataFrame]] = {
    "global_popularity": popularity_baseline,
    "repurchase_frequency": repurchase_baseline,
    "item_knn": knn_baseline,
    "als": lambda fc, m, k=10: als_baseline(fc, m, k, filter_bought=True),
    "als_unfiltered": lambda fc, m, k=10: als_baseline(fc, m, k, filter_bought=False),
}


def compare(model_recs: pd.DataFrame, baseline_recs: dict[str, pd.DataFrame], truth: pd.DataFrame,
            n_catalogue: int, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Metrics of the model and each baseline on the same population, and the gain interval over the best
    baseline (by NDCG@10) for every metric."""
    pm = per_member_metrics(model_recs, truth)
    base_pm = {name: per_member_metrics(r, truth) for name, r in baseline_recs.items()}
    result: dict[str, Any] = {
        "model": summarise(pm, model_recs, n_catalogue),
        "baselines": {name: summarise(base_pm[name], r, n_catalogue) for name, r in baseline_recs.items()},
    }
    best = max(base_pm, key=lambda n: result["baselines"][n]["ndcg_at_10"]) if base_pm else None
    if best is not None:
        result["best_baseline"] = best
        result["gain_ci95"] = {m: list(bootstrap_gain(pm[m], base_pm[best][m], n_boot=n_boot, seed=seed))
                               for m in METRICS}
    return result
