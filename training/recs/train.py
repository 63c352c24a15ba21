"""Recommendation trainer: backtest on time splits, ALS tuning, ranker-vs-blend decision, MLflow run and registry.

Splits for a test cutoff T and horizon H (days): validation cutoff V = T − H, ranker training cutoffs V − H,
V − H − S, V − H − 2S, … with step S (`split_step_days`, default H; every training label window ends by V, so no
validation label is trained on). Candidate generators are
refitted at every cutoff on the rows strictly before it. The ALS hyperparameters are chosen on V (nested MLflow
runs when tracking); the LightGBM ranker is kept only if it beats the repurchase-first blend on V. The final model
is fitted before T and tested on [T, T+H) against every baseline (same members: those who buy in the window).

Plugs into `member-ml train|evaluate|promote recs` through `training.trainers` (SPEC, train, evaluate).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from training.member_pyfunc.recs import RecsModel, blend_score, recommend, top_items
from training.recs import evaluate as ev
from training.recs.candidates import CandidateConfig, FittedCandidates, fit_candidates
from training.recs.ranker import RankerConfig, RankFrame, merge_models, rank_frame, train_bag, train_ranker
from training.recs.rules import RulesConfig
from training.registry import ModelSpec

MODEL_NAME = "recs"
ENTRY = "member_pyfunc.recs:RecsModel"
TASK = "recommendation"
PRIMARY = "ndcg_at_10"


# a bag of 5 rankers (seeds 7…11) with leaves of at least 50 rows: on small data (Taobao: 174 positives to train on)
# one 63-leaf ranker varies a lot with its seed, and the sum of five is steadier
BAGGED: dict[str, Any] = {"bag": 5, "min_data_in_leaf": 50}
# one small ranker without row or feature subsampling (so no seed noise to average away, and no bag): on Complete
# Journey validation NDCG@10 0.4334 against 0.4318 ± 0.0006 (3 seeds) for the default, at ~2,700 leaves served
# instead of ~7,700 (s6 experiments, issue #7)
SMALL_FULL: dict[str, Any] = {"num_leaves": 15, "min_data_in_leaf": 50, "feature_fraction": 1.0,
                              "bagging_fraction": 1.0}


class RecsConfig(BaseModel):
    """Everything the recommendation trainer reads from YAML (`member-ml train recs --config F.yaml`)."""

    model_config = ConfigDict(extra="forbid")

    horizon_days: int = Field(28, ge=1)
    n_train_splits: int = Field(2, ge=1, description="ranker training cutoffs before the validation cutoff")
    split_step_days: int | None = Field(
        None, ge=1, description="days between ranker training cutoffs (default: the horizon); the latest training "
                                "label window still ends at the validation cutoff, so nothing leaks into validation")
    candidates: CandidateConfig = Field(default_factory=CandidateConfig)
    ranker: RankerConfig = Field(default_factory=RankerConfig)
    rules: RulesConfig = Field(default_factory=RulesConfig)
    use_ranker: bool = Field(True, description="try the LightGBM ranker (kept only if it wins on validation)")
    ranker_grid: list[dict[str, Any]] = Field(
        default_factory=lambda: [dict(BAGGED, num_leaves=31), dict(BAGGED, num_leaves=15), dict(SMALL_FULL)],
        description="ranker settings tried besides `ranker` (default: bags of 5 smaller rankers, and one 15-leaf "
                    "ranker on all rows and features); one is kept on the "
                    "validation split (`ranker_select_se`; early-stopped there, never on the test window)")
    als_grid: list[dict[str, Any]] = Field(
        default_factory=lambda: [{"factors": 64, "regularization": 0.05}, {"factors": 128, "regularization": 0.1}],
        description="ALS settings tried on the validation split (empty: keep `candidates`)")
    ranker_select_se: float = Field(
        1.0, ge=0, description="among `ranker` and `ranker_grid`, keep the one with the fewest leaves served (sum of "
                               "trees × leaves: scoring CPU) whose validation NDCG@10 is within this many standard "
                               "errors (paired, over members) of the best; 0: simply the best. Validation differences "
                               "below the noise then buy no latency")
    ranker_max_leaves: int | None = Field(
        10_000, ge=1, description="settings serving more leaves than this (trees × leaves, summed over a bag) are not "
                                  "kept when one within budget exists: the one-member latency bar. Complete Journey: "
                                  "the single ranker serves ~7,700 leaves (ranker 1.2 ms CPU), a bag of 5 × 15 leaves "
                                  "~13,500 (5.3 ms) for +0.001 validation NDCG@10. None: no limit")
    n_boot: int = Field(1000, ge=100)


def one_se_choice(per_member: list[pd.Series], cost: list[float], n_se: float, budget: float | None = None) -> int:
    """Index of the cheapest setting whose mean per-member score is within `n_se` standard errors of the best one's
    (standard error of the paired per-member difference to the best; ties in cost: the earlier setting). With a
    `budget`, only settings costing at most that compete (all of them when none does)."""
    if not per_member or len(per_member) != len(cost):
        raise ValueError("one_se_choice needs one per-member score series and one cost per setting")
    means = [float(s.mean()) for s in per_member]
    allowed = [k for k in range(len(cost)) if budget is None or cost[k] <= budget] or list(range(len(cost)))
    best = max(allowed, key=lambda k: (means[k], -k))
    ref = per_member[best]
    ok = []
    for k in allowed:
        s = per_member[k]
        d = (ref - s.reindex(ref.index).fillna(0.0)).to_numpy(float)
        se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
        if means[best] - means[k] <= n_se * se + 1e-12:
            ok.append(k)
    return min(ok, key=lambda k: (cost[k], k))


def load_config(path: str | Path | None = None, **overrides: Any) -> RecsConfig:
    data: dict[str, Any] = {}
    if path is not None:
        import yaml

        p = Path(path)
        if not p.exists():
            raise ValueError(f"config file {p} does not exist")
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return RecsConfig.model_validate(data)


# --------------------------------------------------------------------------------------------------------------------
# data

def load_tables(store: Any) -> dict[str, pd.DataFrame | None]:
    """The contract tables a recommender uses, from a Store (orders required; events/items/members optional)."""
    return {"orders": store.read("orders"), "events": store.read_optional("events"),
            "items": store.read_optional("items"), "members": store.read_optional("members")}


def truth_at(tables: Mapping[str, pd.DataFrame | None], cutoff: pd.Timestamp, horizon_days: int) -> pd.DataFrame:
    """(member_id, item_id) with a paid order line in [cutoff, cutoff + horizon).

    Same rows as `features.labels.items_bought`, computed in pandas on the in-memory tables: that function's
    DuckDB engine cannot start inside Jupyter without ipywidgets (reported), and the notebook must run.
    """
    o = tables["orders"]
    t = pd.Timestamp(cutoff)
    w = o[(o["ordered_at"] >= t) & (o["ordered_at"] < t + pd.Timedelta(days=horizon_days)) & o["item_id"].notna()]
    if "status" in w.columns:
        w = w[w["status"].fillna("paid") == "paid"]
    out = w[["member_id", "item_id"]].astype("string").drop_duplicates()
    return out.sort_values(["member_id", "item_id"]).reset_index(drop=True)


def default_cutoff(tables: Mapping[str, pd.DataFrame | None], horizon_days: int) -> pd.Timestamp:
    """The latest day whose full label window is inside the data."""
    end = pd.Timestamp(tables["orders"]["ordered_at"].max())
    return (end - pd.Timedelta(days=horizon_days - 1)).normalize()


def _check_split(tables: Mapping[str, pd.DataFrame | None], cutoff: pd.Timestamp, cfg: RecsConfig) -> list[pd.Timestamp]:
    h = pd.Timedelta(days=cfg.horizon_days)
    first = pd.Timestamp(tables["orders"]["ordered_at"].min())
    step = pd.Timedelta(days=cfg.split_step_days or cfg.horizon_days)
    val = cutoff - h
    cuts = [val - h - k * step for k in range(cfg.n_train_splits - 1, -1, -1)] + [val]  # train…, validation
    if cuts[0] <= first:
        raise ValueError(f"cutoff {cutoff.date()} leaves no history before the earliest training cutoff "
                         f"{cuts[0].date()} (data starts {first.date()}): use a later cutoff, a shorter horizon "
                         f"or fewer n_train_splits")
    return cuts


# --------------------------------------------------------------------------------------------------------------------
# backtest

@dataclass
class Backtest:
    evaluation: Any  # training.evaluation.Evaluation
    model: RecsModel
    final: FittedCandidates
    test_history: pd.DataFrame  # the model input of the test members (history as of T, + bare cold-start rows)
    truth: pd.DataFrame
    recs: pd.DataFrame
    baseline_recs: dict[str, pd.DataFrame]
    frames: dict[str, dict[str, Any]] = field(default_factory=dict)  # per split: cutoff, members, rows, positives
    als_search: list[dict[str, Any]] = field(default_factory=list)
    ranker_info: dict[str, Any] = field(default_factory=dict)


def _step(progress: Any, text: str) -> None:
    if progress is not None:
        progress.add_task(text, total=None)


def _frame_recs(fc: FittedCandidates, f: RankFrame, score: np.ndarray) -> pd.DataFrame:
    return top_items(fc.art, f.hb, f.cand, score, apply_rules=True)


def _ndcg(recs: pd.DataFrame, truth: pd.DataFrame) -> float:
    return float(ev.per_member_metrics(recs, truth)["ndcg_at_10"].mean())


def model_input(fc: FittedCandidates, members: np.ndarray) -> pd.DataFrame:
    """History rows of `members` as of the fit's cutoff, plus bare rows for members without history."""
    h = fc.history[fc.history["member_id"].isin(members)]
    cold = np.setdiff1d(np.asarray(members, dtype=str), h["member_id"].astype(str).unique())
    return pd.concat([h, pd.DataFrame({"member_id": pd.array(cold, dtype="string")})], ignore_index=True)


def als_search(tables: Mapping[str, pd.DataFrame | None], cutoff: pd.Timestamp, truth: pd.DataFrame,
               cfg: RecsConfig, log_nested: bool = False
               ) -> tuple[CandidateConfig, list[dict[str, Any]], FittedCandidates | None]:
    """Pick ALS settings by ALS-alone NDCG@10 (unfiltered) on the validation split; optionally nested MLflow runs.

    Returns (chosen config, one result row per setting tried, the fit of the chosen setting at `cutoff`)."""
    if not cfg.als_grid:
        return cfg.candidates, [], None
    members = pd.unique(truth["member_id"].to_numpy())
    results = []
    best_fc, best_score = None, -1.0
    for grid in cfg.als_grid:
        cand = cfg.candidates.model_copy(update=grid)
        fc = fit_candidates(tables, cutoff, cand, cfg.rules)
        score = _ndcg(ev.als_baseline(fc, np.asarray(members), filter_bought=False), truth)
        results.append({**grid, "val_ndcg_at_10": score})
        if score > best_score:
            best_fc, best_score = fc, score
        if log_nested:
            import mlflow

            with mlflow.start_run(run_name=f"als-{'-'.join(f'{k}{v}' for k, v in grid.items())}", nested=True):
                mlflow.log_params({**cand.model_dump(include={"factors", "regularization", "iterations",
                                                               "bm25_k1", "bm25_b"}), "cutoff": cutoff.date()})
                mlflow.log_metric("val_ndcg_at_10", score)
    best = max(results, key=lambda r: r["val_ndcg_at_10"])
    chosen = cfg.candidates.model_copy(update={k: v for k, v in best.items() if k != "val_ndcg_at_10"})
    return chosen, results, best_fc


def run_backtest(tables: Mapping[str, pd.DataFrame | None], *, cutoff: Any, cfg: RecsConfig,
                 baselines: bool = True, progress: Any = None, log_nested: bool = False) -> Backtest:
    """Tune, train and test at `cutoff` (see the module docstring); nothing is logged unless `log_nested`."""
    from training.evaluation import Evaluation

    t = pd.Timestamp(cutoff)
    cuts = _check_split(tables, t, cfg)
    h = cfg.horizon_days
    *train_cuts, val_cut = cuts
    truths = {c: truth_at(tables, c, h) for c in [*cuts, t]}
    for c, tr in truths.items():
        if tr.empty:
            raise ValueError(f"no purchases in the window [{c.date()}, +{h} days): nothing to evaluate against")
    _step(progress, f"ALS search on validation cutoff {val_cut.date()}")
    cand_cfg, search, fc_val = als_search(tables, val_cut, truths[val_cut], cfg, log_nested)
    frames: dict[pd.Timestamp, tuple[FittedCandidates, RankFrame]] = {}
    for c in cuts:
        _step(progress, f"candidates at {c.date()}")
        fc = fc_val if (c == val_cut and fc_val is not None) else fit_candidates(tables, c, cand_cfg, cfg.rules)
        frames[c] = (fc, rank_frame(fc, truths[c]))
    fc_v, f_v = frames[val_cut]
    val = {"blend": _ndcg(_frame_recs(fc_v, f_v, blend_score(f_v.cand.X)), f_v.truth)}
    ranker_text, info = None, {"kept": False}
    notes = []
    if cfg.use_ranker:
        _step(progress, "LightGBM lambdarank on the training splits")
        tried, per_member, costs, fits = [], [], [], []
        for grid in [{}, *cfg.ranker_grid]:
            rcfg = cfg.ranker.model_copy(update=grid)
            rinfo, val_scores = train_bag([frames[c][1] for c in train_cuts], f_v, rcfg)
            pm = ev.per_member_metrics(_frame_recs(fc_v, f_v, val_scores), f_v.truth)["ndcg_at_10"]
            cost = float(sum(rinfo["bag_iterations"]) * rcfg.num_leaves)  # leaves served: scoring CPU grows with it
            tried.append({**grid, "val_ndcg_at_10": round(float(pm.mean()), 4),
                          "best_iteration": rinfo["best_iteration"], "leaves_served": int(cost)})
            per_member.append(pm)
            costs.append(cost)
            fits.append((rinfo, rcfg))
        pick = one_se_choice(per_member, costs, cfg.ranker_select_se, cfg.ranker_max_leaves)
        info, ranker_cfg = fits[pick]
        val["ranker"] = float(per_member[pick].mean())
        for k, row in enumerate(tried):
            row["chosen"] = k == pick
        info["grid"] = tried
        if len(tried) > 1:
            notes.append("ranker settings on validation (NDCG@10, leaves served): " + "; ".join(
                f"{ {k: v for k, v in t.items() if k not in ('val_ndcg_at_10', 'best_iteration', 'leaves_served', 'chosen')} or 'default'} "
                f"{t['val_ndcg_at_10']:.4f} {t['leaves_served']}{' (chosen)' if t['chosen'] else ''}" for t in tried)
                + f"; rule: the fewest leaves within {cfg.ranker_select_se:g} standard error(s) of the best"
                + (f", at most {cfg.ranker_max_leaves} leaves" if cfg.ranker_max_leaves else ""))
        info["kept"] = val["ranker"] > val["blend"]
        if info["kept"]:
            # every bag member refitted on all splits (validation included) for its own early-stopped rounds + 10%
            texts = [train_ranker([frames[c][1] for c in cuts], None, mcfg,
                                  num_boost_round=max(int(it * 1.1), 10))[0].model_to_string()
                     for mcfg, it in zip(ranker_cfg.members(), info["bag_iterations"], strict=True)]
            ranker_text = merge_models(texts)
            info["ranker"] = {"bag": ranker_cfg.bag, "objectives": [m.objective for m in ranker_cfg.members()],
                              "iterations": info["bag_iterations"]}
            notes.append(f"ranker: {ranker_cfg.bag} LightGBM ranker(s) summed "
                         f"(objectives {sorted(set(info['ranker']['objectives']))}, early-stopped rounds "
                         f"{info['bag_iterations']})")
        notes.append(f"validation NDCG@10 at {val_cut.date()}: ranker {val['ranker']:.4f} vs repurchase-first blend "
                     f"{val['blend']:.4f}: {'ranker kept' if info['kept'] else 'blend kept'}")
    info["validation"] = val
    _step(progress, f"final candidates at {t.date()} and test on [{t.date()}, +{h} days)")
    fc_t = fit_candidates(tables, t, cand_cfg, cfg.rules)
    fc_t.art.ranker = ranker_text
    fc_t.art.params["winner"] = "ranker" if ranker_text else "blend"
    truth = truths[t]
    members = np.asarray(pd.unique(truth["member_id"].to_numpy()), dtype=str)
    inp = model_input(fc_t, members)
    recs = recommend(fc_t.art, inp, as_of=t)
    base = {name: fn(fc_t, members) for name, fn in ev.BASELINES.items()} if baselines else {}
    res = ev.compare(recs, base, truth, fc_t.art.n_items, n_boot=cfg.n_boot)
    split = {"cutoff": t.date().isoformat(), "horizon_days": h, "members": int(len(members)),
             "validation_cutoff": val_cut.date().isoformat(),
             "train_cutoffs": [c.date().isoformat() for c in train_cuts], "items": int(fc_t.art.n_items)}
    frame_info = {c.date().isoformat(): {"cutoff": c.date().isoformat(), "members": int(f.hb.b),
                                         "candidates": int(len(f.y)), "positives": int(f.y.sum()),
                                         "candidate_recall": float(f.y.sum() / max(len(f.truth), 1))}
                  for c, (_, f) in frames.items()}
    evaluation = Evaluation(task=TASK, split=split, model=res["model"], baselines=res.get("baselines", {}),
                            gain_ci95={k: tuple(v) for k, v in res.get("gain_ci95", {}).items()},
                            best_baseline=res.get("best_baseline"), primary=PRIMARY, notes=notes,
                            extra={"winner": fc_t.art.params["winner"],
                                   "validation": {k: round(v, 4) for k, v in val.items()},
                                   **({"ranker": info["ranker"]} if "ranker" in info else {}),
                                   "als": {k: v for k, v in cand_cfg.model_dump().items()
                                           if k in ("factors", "regularization", "iterations", "bm25_k1", "bm25_b")},
                                   # share of the items bought in each split's label window that were candidates
                                   "candidate_recall": {k: round(v["candidate_recall"], 4)
                                                        for k, v in frame_info.items()}})
    return Backtest(evaluation=evaluation, model=RecsModel(fc_t.art), final=fc_t, test_history=inp, truth=truth,
                    recs=recs, baseline_recs=base, frames=frame_info, als_search=search, ranker_info=info)


# --------------------------------------------------------------------------------------------------------------------
# registry gate and the trainer interface

def score(model: Any, backtest_set: Mapping[str, pd.DataFrame]) -> float:
    """The promotion gate's metric: NDCG@10 of the model's top-10 on the backtest's test members."""
    hist = backtest_set["history"]
    as_of = pd.Timestamp(backtest_set["split"]["as_of"].iloc[0])
    recs = model.predict(None, hist, params={"as_of": as_of})
    return _ndcg(recs, backtest_set["truth"])


SPEC = ModelSpec(name=MODEL_NAME, primary_metric=PRIMARY, scorer=score, greater_is_better=True)


def evaluate(store: Any, *, cutoff: Any, horizon: int | None = None, config: Any = None, baselines: bool = True,
             progress: Any = None) -> Any:
    """Backtest at `cutoff` (CLI `member-ml evaluate recs`); logs nothing."""
    cfg = load_config(config, horizon_days=horizon)
    return run_backtest(load_tables(store), cutoff=cutoff, cfg=cfg, baselines=baselines, progress=progress).evaluation


def figures(bt: Backtest) -> dict[str, Any]:
    """precision@k / recall@k curves (model and baselines) and the ranker's feature importance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, recs in {"model": bt.recs, **bt.baseline_recs}.items():
        curve = ev.precision_recall_curve(recs, bt.truth, ks=(1, 2, 3, 5, 10))
        axes[0].plot(curve["k"], curve["precision"], marker="o", label=name)
        axes[1].plot(curve["k"], curve["recall"], marker="o", label=name)
    axes[0].set(xlabel="k", ylabel="precision@k", title="precision@k")
    axes[1].set(xlabel="k", ylabel="recall@k", title="recall@k")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    out = {"precision_at_k": fig}
    imp = bt.ranker_info.get("feature_importance")
    if imp:
        f2, ax = plt.subplots(figsize=(6, 5))
        s = pd.Series(imp).sort_values()
        ax.barh(s.index, s.to_numpy())
        ax.set(title="ranker feature importance (gain)")
        f2.tight_layout()
        out["feature_importance"] = f2
    return out


def train(store: Any, *, settings: Any, cutoff: Any = None, horizon: int | None = None, config: Any = None,
          promote: bool = True, progress: Any = None) -> Any:
    """Backtest at `cutoff` (default: the latest day with a full label window), log, register, gate."""
    import mlflow

    from training import tracking
    from training.runlog import record_run

    cfg = load_config(config, horizon_days=horizon)
    tables = load_tables(store)
    t = pd.Timestamp(cutoff) if cutoff is not None else default_cutoff(tables, cfg.horizon_days)
    exp = tracking.ensure_experiment(MODEL_NAME, settings)
    with mlflow.start_run(experiment_id=exp, run_name=f"recs-als-search-{t.date()}"):
        bt = run_backtest(tables, cutoff=t, cfg=cfg, progress=progress, log_nested=True)
        mlflow.log_dict({"als_search": bt.als_search}, "als_search.json")
    e = bt.evaluation
    manifest_frame = pd.DataFrame(list(bt.frames.values())).assign(
        bought_mean=lambda d: d["positives"] / d["candidates"].clip(lower=1))
    manifest = {"feature_version": "recs-v1", "definitions": "training.member_pyfunc.recs.FEATURES",
                "splits": bt.frames, "als_search": bt.als_search, "winner": e.extra["winner"]}
    backtest = {"history": bt.test_history.reset_index(drop=True), "truth": bt.truth.reset_index(drop=True),
                "split": pd.DataFrame({"as_of": [t], "horizon_days": [cfg.horizon_days]})}
    example = bt.test_history[bt.test_history["item_id"].notna()].head(5)
    params = {**cfg.candidates.model_dump(exclude={"segment_column"}), **e.extra["als"],
              "winner": e.extra["winner"], "test_cutoff": t.date().isoformat(), "horizon_days": cfg.horizon_days,
              "ranker_best_iteration": bt.ranker_info.get("best_iteration"),
              "ranker_bag": (bt.ranker_info.get("ranker") or {}).get("bag"),
              "ranker_objectives": ",".join(sorted(set((bt.ranker_info.get("ranker") or {}).get("objectives", []))))}
    cuts = [pd.Timestamp(c) for c in bt.frames] + [t]
    return record_run(spec=SPEC, settings=settings, store=store, model=bt.model, entry=ENTRY, params=params,
                      metrics=e.model, baselines=e.baselines, figures=figures(bt), manifest=manifest,
                      manifest_frame=manifest_frame, label="bought", backtest=backtest, input_example=example,
                      cutoffs=cuts, horizon_days=cfg.horizon_days, promote=promote, notes=e.notes)
