"""LightGBM lambdarank over the union of candidates, trained on earlier time splits.

For a cutoff T the candidate generators are fitted on rows before T, every member who buys in [T, T+H) gets
candidates with features (`scorer.FEATURES`), and a candidate is relevant if the member bought it in the window.
The ranker is kept only if it beats the repurchase-first blend on a later validation split.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from training.recs.candidates import FittedCandidates
from training.member_pyfunc.recs import FEATURES, Candidates, HistoryBatch, build_candidates, prepare_history


class RankerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    learning_rate: float = Field(0.05, gt=0)
    num_leaves: int = Field(63, ge=2)
    min_data_in_leaf: int = Field(100, ge=1)
    feature_fraction: float = Field(0.9, gt=0, le=1)
    bagging_fraction: float = Field(0.8, gt=0, le=1)
    lambda_l2: float = Field(1.0, ge=0)
    num_boost_round: int = Field(400, ge=1)
    early_stopping_rounds: int = Field(40, ge=1)
    truncation_level: int = Field(30, ge=1)
    objective: str = Field("lambdarank", pattern="^(lambdarank|rank_xendcg)$",
                           description="LightGBM ranking objective (rank_xendcg: listwise cross-entropy, no truncation)")
    num_threads: int = Field(1, ge=1, description="LightGBM threads; 1: OpenMP threads spin and stall when the 2 "
                                                 "cores are shared (Taobao ranker: 3 CPU-s at 1 thread, 24 at 2)")
    seed: int = 7
    bag: int = Field(1, ge=1, description="rankers trained with seeds seed, seed+1, … (and `bag_objectives` in turn), "
                                          "each early-stopped on validation; their scores are summed (the served "
                                          "model is one LightGBM text holding all their trees): less variance")
    bag_objectives: list[str] = Field(default_factory=list, description="objectives the bag members cycle through "
                                                                        "(empty: `objective` for all)")

    def members(self) -> list["RankerConfig"]:
        """One single-ranker config per bag member (seed and objective set, bag 1)."""
        objs = self.bag_objectives or [self.objective]
        bad = [o for o in objs if o not in ("lambdarank", "rank_xendcg")]
        if bad:
            raise ValueError(f"bag_objectives: unknown ranking objective(s) {bad} (lambdarank, rank_xendcg)")
        return [self.model_copy(update={"seed": self.seed + k, "objective": objs[k % len(objs)], "bag": 1,
                                        "bag_objectives": []}) for k in range(self.bag)]


@dataclass
class RankFrame:
    """Candidates of one split with their relevance labels (rows grouped by member)."""

    hb: HistoryBatch
    cand: Candidates
    y: np.ndarray  # 0/1 per candidate row
    truth: pd.DataFrame  # member_id, item_id bought in the window (for full-recall metrics)

    @property
    def groups(self) -> np.ndarray:
        return np.bincount(self.cand.m, minlength=self.hb.b)


def rank_frame(fc: FittedCandidates, truth: pd.DataFrame, members: np.ndarray | None = None) -> RankFrame:
    """Candidates and labels for the members of `truth` (or `members`) at the cutoff `fc` was fitted at."""
    t = truth[["member_id", "item_id"]].astype({"member_id": "string", "item_id": "string"}).drop_duplicates()
    ids = np.asarray(pd.unique(t["member_id"].to_numpy()) if members is None else members, dtype=object)
    h = fc.history[fc.history["member_id"].isin(ids)]
    cold = np.setdiff1d(ids.astype(str), h["member_id"].astype(str).unique())
    inp = pd.concat([h, pd.DataFrame({"member_id": pd.array(cold, dtype="string")})], ignore_index=True)
    hb = prepare_history(inp, fc.art, fc.cutoff)
    cand = build_candidates(fc.art, hb)
    n = fc.art.n_items
    tm = pd.Index(hb.member_ids).get_indexer(t["member_id"])
    ti = fc.art.item_index.get_indexer(t["item_id"])
    ok = (tm >= 0) & (ti >= 0)
    tkey = np.sort(tm[ok].astype(np.int64) * n + ti[ok])
    ckey = cand.m * n + cand.i
    y = np.isin(ckey, tkey).astype(np.float32)
    return RankFrame(hb=hb, cand=cand, y=y, truth=t)


def _useful(frame: RankFrame) -> np.ndarray:
    """Rows of members who have at least one relevant candidate (others carry no ranking signal)."""
    pos = np.bincount(frame.cand.m, weights=frame.y, minlength=frame.hb.b)
    return pos[frame.cand.m] > 0


def _dataset(frames: list[RankFrame]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs, ys, gs = [], [], []
    for f in frames:
        keep = _useful(f)
        xs.append(f.cand.X[keep])
        ys.append(f.y[keep])
        g = np.bincount(f.cand.m[keep], minlength=f.hb.b)
        gs.append(g[g > 0])
    return np.vstack(xs), np.concatenate(ys), np.concatenate(gs)


def train_ranker(train: list[RankFrame], valid: RankFrame | None, config: RankerConfig | None = None,
                 num_boost_round: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Fit the lambdarank booster; with `valid`, early-stop on its NDCG@10. Returns (booster, info)."""
    import lightgbm as lgb

    cfg = config or RankerConfig()
    X, y, g = _dataset(train)
    if len(g) == 0 or y.sum() == 0:
        raise ValueError("no member has a relevant candidate in the ranker's training splits")
    params = {
        "objective": cfg.objective, "metric": "ndcg", "eval_at": [10], "learning_rate": cfg.learning_rate,
        "num_leaves": cfg.num_leaves, "min_data_in_leaf": cfg.min_data_in_leaf,
        "feature_fraction": cfg.feature_fraction, "bagging_fraction": cfg.bagging_fraction, "bagging_freq": 1,
        "lambda_l2": cfg.lambda_l2, "lambdarank_truncation_level": cfg.truncation_level,
        "num_threads": cfg.num_threads, "seed": cfg.seed, "verbose": -1, "deterministic": True,
    }
    dtrain = lgb.Dataset(X, y, group=g, feature_name=list(FEATURES), free_raw_data=True)
    callbacks = []
    valid_sets = []
    if valid is not None and num_boost_round is None:
        Xv, yv, gv = _dataset([valid])
        valid_sets = [lgb.Dataset(Xv, yv, group=gv, reference=dtrain)]
        callbacks.append(lgb.early_stopping(cfg.early_stopping_rounds, verbose=False))
    booster = lgb.train(params, dtrain, num_boost_round=num_boost_round or cfg.num_boost_round,
                        valid_sets=valid_sets, callbacks=callbacks)
    best = booster.best_iteration if booster.best_iteration > 0 else booster.current_iteration()
    importance = dict(zip(FEATURES, booster.feature_importance("gain").round(1).tolist(), strict=True))
    return booster, {"best_iteration": int(best), "train_rows": int(len(y)), "train_members": int(len(g)),
                     "feature_importance": importance}


def train_bag(train: list[RankFrame], valid: RankFrame, config: RankerConfig | None = None
              ) -> tuple[dict[str, Any], np.ndarray]:
    """Train every bag member of `config` (each early-stopped on `valid`) and sum their scores on `valid`.

    Returns (info, summed validation scores); info holds each member's best iteration (`bag_iterations`), the
    first's as `best_iteration`, and the gain importance summed over members."""
    cfg = config or RankerConfig()
    scores = np.zeros(len(valid.y))
    infos = []
    for mcfg in cfg.members():
        booster, rinfo = train_ranker(train, valid, mcfg)
        scores += booster.predict(valid.cand.X, num_threads=mcfg.num_threads)
        infos.append(rinfo)
    importance = {f: round(sum(i["feature_importance"][f] for i in infos), 1) for f in FEATURES}
    return {**infos[0], "bag_iterations": [i["best_iteration"] for i in infos], "feature_importance": importance}, \
        scores


_TREE_HEAD = re.compile(r"^Tree=\d+\n", re.M)


def merge_models(texts: list[str]) -> str:
    """One LightGBM model text whose prediction is the sum of the given models' raw scores (their trees one after the
    other, renumbered; `tree_sizes` recomputed so LightGBM's loader finds them). Models must share the feature list.

    Why: a bag of rankers is served as one model, so the pyfunc, LightGBM and the compiled predictor need no change.
    """
    if not texts:
        raise ValueError("merge_models needs at least one model text")
    heads, blocks, tail, names = [], [], None, None
    for k, text in enumerate(texts):
        start = _TREE_HEAD.search(text)
        end = text.find("end of trees")
        if start is None or end < 0:
            raise ValueError(f"model text {k} has no trees or no 'end of trees' marker")
        head = text[:start.start()]
        feats = re.search(r"^feature_names=(.*)$", head, re.M)
        if feats is None or (names is not None and feats.group(1) != names):
            raise ValueError(f"model text {k} has a different feature list than the first")
        names = feats.group(1)
        heads.append(head)
        if tail is None:
            tail = text[end:]
        body = text[start.start():end]
        bounds = [m.start() for m in _TREE_HEAD.finditer(body)] + [len(body)]
        blocks += [body[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    renumbered = [_TREE_HEAD.sub(f"Tree={n}\n", b, count=1) for n, b in enumerate(blocks)]
    sizes = " ".join(str(len(b.encode())) for b in renumbered)
    head = re.sub(r"^tree_sizes=.*$", f"tree_sizes={sizes}", heads[0], count=1, flags=re.M)
    return head + "".join(renumbered) + tail
