"""LTV trainer: expected paid spend over the horizon with LightGBM (DESIGN §5), never negative.

Two learners are fitted on the same stacked cutoffs and early-stopped on the validation cutoff:
- "tweedie": one booster with a Tweedie objective (handles the mass of zero spenders and the long tail at once);
- "two_part": P(buy) (binary) × spend given a purchase (Gamma objective, fitted on buyers only).
`kind: auto` (default) compares their normalized Gini on the validation cutoff (rows neither booster trained on) and
keeps Tweedie unless the two-part model wins by more than `two_part_margin` (0.005): on Complete Journey, Online
Retail and the synthetic store the two tie within 0.001, and one booster is simpler to serve and explain. Both
scores are recorded with the run, so the choice is made by backtest, not by taste.

Levers chosen on a nested backtest (the test cutoff moved back to the validation cutoff; issue 5 lever table):
- early stopping on the validation rows' normalized Gini (`early_stopping_metric: gini`), the metric the model is
  judged by (rank-based with spend weights), instead of the Tweedie deviance, which keeps adding trees that fit the
  level of big spenders without improving their order;
- seed bagging (`bags: 5`): each booster is fitted `bags` times with different seeds (row and feature subsampling
  differ) and the predictions are averaged, which removes most of the seed-to-seed noise of one booster.
- diversity, not seeds (`extra_trees_weight: 0.2`): a second bag of Tweedie boosters grown with extremely randomised
  splits (`extra_trees`) on the same rows, blended in log space with weight 0.2 (kind tweedie).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from features.contract import MEMBER_ID
from features.labels import LABEL_COLUMNS
from features.store import Store
from member_ml.settings import Settings
from training import backtest, baselines, metrics as M, plots
from training.config import BoosterConfig, load_config as _load_config
from training.evaluation import Evaluation, compare
from training.member_pyfunc.ltv import EXTRA_ROLE, ROLES, LtvModel, part_name
from training.member_pyfunc.matrix import FeatureSpec
from training.registry import ModelSpec
from training.trainers import TrainOutcome

LABEL = "ltv"
NON_FEATURES = frozenset({MEMBER_ID, "cutoff", *LABEL_COLUMNS})
ENTRY = "member_pyfunc.ltv:LtvModel"


class LtvConfig(BoosterConfig):
    """LTV trainer settings (YAML keys of `member-ml train ltv --config`)."""

    horizon_days: int = Field(365, gt=0)
    kind: Literal["auto", "tweedie", "two_part"] = "auto"
    two_part_margin: float = Field(0.005, ge=0)  # auto: two-part must beat Tweedie's validation Gini by this much
    num_leaves: int = Field(15, ge=2)
    tweedie_variance_power: float = Field(1.3, gt=1, lt=2)
    # stop adding trees when the validation normalized Gini stops improving ("objective": the objective's own loss)
    early_stopping_metric: Literal["gini", "objective"] = "gini"
    bags: int = Field(5, ge=1, le=50)  # boosters per role fitted with seeds seed, seed+1, …; predictions averaged
    # refit on all cutoffs up to the test: off for LTV (nested backtest at the validation cutoff: Gini +0.002
    # Complete Journey, +0.001 synthetic, −0.008 Online Retail; churn keeps it on) — see issue 5 lever table
    refit: bool = False
    # kind tweedie: weight w of a second bag of Tweedie boosters with extremely randomised splits (LightGBM
    # extra_trees) in the log-space blend value^(1−w)·extra^w; 0 turns it off. Nested backtest (test at the
    # validation cutoff) Gini, w 0 → 0.2: Complete Journey .8879 → .8884, Online Retail .7831 → .7833, synthetic
    # .8660 → .8661 (flat-positive for w .1–.3; .5 loses on synthetic) — issue 5 lever table
    extra_trees_weight: float = Field(0.2, ge=0, lt=1)


def load_config(path: str | Path | None = None, **overrides: Any) -> LtvConfig:
    return _load_config(LtvConfig, path, **overrides)


def score(model: Any, backtest_set: dict[str, pd.DataFrame]) -> float:
    """The promotion gate's metric: normalized Gini of predicted LTV on the backtest's `test` frame."""
    test = backtest_set["test"]
    return M.gini(test[LABEL].to_numpy(float), model.predict(None, test)["ltv"].to_numpy())


SPEC = ModelSpec(name="ltv", primary_metric="gini", scorer=score, greater_is_better=True)


def _params(cfg: LtvConfig, objective: str) -> dict[str, Any]:
    p = cfg.lgb_params(objective)
    if objective == "tweedie":
        p["tweedie_variance_power"] = cfg.tweedie_variance_power
    return p


def _gini_eval(preds: np.ndarray, data: Any) -> tuple[str, float, bool]:
    """LightGBM feval: normalized Gini of the predictions against the dataset's labels (higher is better).

    Rank-based, so raw or transformed predictions (any monotone link) give the same value."""
    g = M.gini(data.get_label(), preds)
    return "gini", (g if np.isfinite(g) else 0.0), True


def _boost(cfg: LtvConfig, objective: str, x: np.ndarray, y: np.ndarray, xv: np.ndarray | None,
           yv: np.ndarray | None, spec: FeatureSpec, metric: str, rounds: int | None = None, bag: int = 0,
           extra_trees: bool = False) -> Any:
    """Early-stopped on (xv, yv); with `rounds` (a refit) a fixed number of rounds and no validation set.

    `bag` offsets the seed (seed bagging); early stopping follows `cfg.early_stopping_metric`; `extra_trees` grows
    extremely randomised trees (a random threshold per feature)."""
    import lightgbm as lgb

    by_gini = cfg.early_stopping_metric == "gini"
    params = {**_params(cfg, objective), "metric": "None" if by_gini else metric, "seed": cfg.seed + bag,
              **({"extra_trees": True} if extra_trees else {})}
    d = lgb.Dataset(x, y, feature_name=spec.columns, categorical_feature=spec.categorical_indices or "auto",
                    free_raw_data=False)
    if rounds is not None:
        return lgb.train(params, d, num_boost_round=rounds)
    dv = lgb.Dataset(xv, yv, reference=d)
    b = lgb.train(params, d, num_boost_round=cfg.num_boost_round, valid_sets=[dv], valid_names=["validation"],
                  feval=_gini_eval if by_gini else None,
                  callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)])
    return lgb.Booster(model_str=b.model_to_string(num_iteration=b.best_iteration if b.best_iteration > 0 else None))


def _fit_kind(cfg: LtvConfig, kind: str, x: np.ndarray, y: np.ndarray, xv: np.ndarray | None,
              yv: np.ndarray | None, spec: FeatureSpec, rounds: dict[str, int] | None = None) -> dict[str, Any]:
    """All boosters of `kind` (cfg.bags seeds per role): early-stopped on (xv, yv), or with `rounds` per part."""
    pos = y > 0
    posv = yv > 0 if yv is not None else None
    sets = {"value": ("tweedie", x, y, xv, yv, "tweedie"),
            "buy": ("binary", x, pos.astype(float), xv, None if yv is None else posv.astype(float), "binary_logloss"),
            "spend": ("gamma", x[pos], y[pos], None if xv is None else xv[posv], None if yv is None else yv[posv],
                      "gamma")}
    sets[EXTRA_ROLE] = sets["value"]
    roles = (*ROLES[kind], *((EXTRA_ROLE,) if _extra_weight(cfg, kind) > 0 else ()))
    out = {}
    for bag in range(cfg.bags):
        for role in roles:
            objective, a, b, av, bv, metric = sets[role]
            part = part_name(role, bag)
            out[part] = _boost(cfg, objective, a, b, av, bv, spec, metric, None if rounds is None else rounds[part],
                               bag, extra_trees=role == EXTRA_ROLE)
    return out


def _extra_weight(cfg: LtvConfig, kind: str) -> float:
    """The extra-trees blend weight of a learner of `kind` (tweedie only)."""
    return cfg.extra_trees_weight if kind == "tweedie" else 0.0


def fit(train: pd.DataFrame, valid: pd.DataFrame, cfg: LtvConfig,
        refit: pd.DataFrame | None = None) -> tuple[LtvModel, dict[str, Any]]:
    """Fit the configured learner(s); with kind=auto keep the better by validation Gini.

    With `refit` rows (every row whose label window ends by the test cutoff) the chosen learner is refitted on them
    with each booster's early-stopped trees × `refit_rounds_scale`.
    """
    for name, df in (("training", train), ("validation", valid)):
        if df[LABEL].isna().all():
            raise ValueError(f"{name} rows have no LTV labels (does the store have order amounts?)")
        if (df[LABEL].fillna(0) > 0).sum() < 2:
            raise ValueError(f"{name} rows have fewer than two members with spend in the horizon")
    train = train[train[LABEL].notna()]
    valid = valid[valid[LABEL].notna()]
    derived, why = backtest.fit_derived(train, cfg.horizon_days, cfg.bgnbd_features)
    if derived is not None:
        train, valid = derived.augment(train), derived.augment(valid)
    spec = FeatureSpec.from_frame(train, exclude=NON_FEATURES | set(cfg.exclude_features))
    x, xv = spec.matrix(train), spec.matrix(valid)
    y, yv = train[LABEL].to_numpy(float).clip(0), valid[LABEL].to_numpy(float).clip(0)
    kinds = ("tweedie", "two_part") if cfg.kind == "auto" else (cfg.kind,)
    candidates = {k: LtvModel(k, _fit_kind(cfg, k, x, y, xv, yv, spec), spec, cfg.horizon_days, derived,
                              _extra_weight(cfg, k)) for k in kinds}
    val_gini = {k: M.gini(yv, m.predict_value(valid)) for k, m in candidates.items()}
    if len(val_gini) == 2:  # prefer the simpler single booster unless the two-part model is clearly better
        kind = "two_part" if val_gini["two_part"] > val_gini["tweedie"] + cfg.two_part_margin else "tweedie"
    else:
        kind = next(iter(val_gini))
    model = candidates[kind]
    info = {"kind": kind, "train_rows": len(train), "validation_rows": len(valid), "features": len(spec.columns),
            "bags": cfg.bags, "early_stopping_metric": cfg.early_stopping_metric,
            "extra_trees_weight": model.extra_weight,
            **{f"validation_gini_{k}": round(v, 4) for k, v in val_gini.items()},
            **{f"trees_{p}": b.num_trees() for p, b in model.boosters.items()},
            **backtest.derived_info(derived, why)}
    if refit is not None:
        model, more = _refit(refit, cfg, model)
        info.update(more)
    return model, info


def _refit(rows: pd.DataFrame, cfg: LtvConfig, chosen: LtvModel) -> tuple[LtvModel, dict[str, Any]]:
    """The chosen learner refitted on all `rows` with its boosters' tree counts × `refit_rounds_scale`."""
    rows = rows[rows[LABEL].notna()]
    if (rows[LABEL] > 0).sum() < 2:
        raise ValueError("refit rows have fewer than two members with spend in the horizon")
    derived, _ = backtest.fit_derived(rows, cfg.horizon_days, cfg.bgnbd_features)
    if derived is not None:
        rows = derived.augment(rows)
    spec = FeatureSpec.from_frame(rows, exclude=NON_FEATURES | set(cfg.exclude_features))
    x, y = spec.matrix(rows), rows[LABEL].to_numpy(float).clip(0)
    n = {p: backtest.refit_rounds(b.num_trees(), cfg.refit_rounds_scale) for p, b in chosen.boosters.items()}
    boosters = _fit_kind(cfg, chosen.kind, x, y, None, None, spec, n)
    info = {"refit_rows": len(rows), "refit_cutoffs": int(pd.to_datetime(rows["cutoff"]).nunique()),
            **{f"refit_trees_{p}": v for p, v in n.items()}}
    return LtvModel(chosen.kind, boosters, spec, cfg.horizon_days, derived, chosen.extra_weight), info


def importance(model: LtvModel) -> pd.Series:
    total = sum(b.feature_importance("gain") for b in model.boosters.values())
    return pd.Series(total, index=model.spec.columns)


def _baseline_scores(store: Store, data: backtest.BacktestData, with_bgnbd: bool, notes: list[str],
                     progress: Any = None, bgnbd: pd.DataFrame | None = None) -> dict[str, np.ndarray]:
    orders = baselines.read_orders(store, data.test_cutoff)
    h = data.horizon_days
    scores = {f"last_{h}d_spend": baselines.recent_spend(orders, data.test_cutoff, h, data.test[MEMBER_ID])}
    if not with_bgnbd:
        return scores
    if not baselines.has_pymc_marketing():
        notes.append(baselines.BGNBD_HINT)
        return scores
    task = progress.add_task("BG/NBD + Gamma-Gamma baseline (pymc-marketing, MAP)", total=None) if progress else None
    exp = bgnbd if bgnbd is not None else baselines.bgnbd_expectations(orders, data.test_cutoff, h,
                                                                        data.test[MEMBER_ID])
    exp = exp.set_index(MEMBER_ID).reindex(data.test[MEMBER_ID].astype(str).to_numpy()).fillna(0.0)
    scores["bgnbd_gg"] = exp["expected_spend"].to_numpy()
    if task is not None:
        progress.update(task, completed=1, total=1)
    return scores


def run_backtest(store: Store, *, cutoff: Any, cfg: LtvConfig, with_bgnbd: bool, progress: Any = None,
                 data: backtest.BacktestData | None = None, bgnbd: pd.DataFrame | None = None
                 ) -> tuple[Evaluation, LtvModel, backtest.BacktestData, dict[str, np.ndarray]]:
    """Fit on cutoffs before `cutoff`, test at `cutoff`; return the evaluation, model, data and all predictions."""
    data = data or backtest.load_with_progress(store, cutoff, cfg.horizon_days, cfg.max_train_cutoffs, progress,
                                               cfg.cutoff_every_days, refit=cfg.refit)
    if data.test[LABEL].isna().all():
        raise ValueError("the store has no order amounts: LTV cannot be trained (churn and timing still can)")
    fit_task = progress.add_task("LightGBM LTV models", total=None) if progress else None
    rows = backtest.refit_rows(data, cfg.refit)
    if rows is not None:
        backtest.check_refit_rows(rows, data.test_cutoff, data.horizon_days)
    model, info = fit(data.train, data.valid, cfg, rows)
    if progress:
        progress.update(fit_task, completed=1, total=1)
    notes: list[str] = [f"learner: {info['kind']} (validation Gini " + ", ".join(
        f"{k.removeprefix('validation_gini_')} {v}" for k, v in info.items() if k.startswith("validation_gini_"))
        + ")"]
    base = _baseline_scores(store, data, with_bgnbd, notes, progress, bgnbd)
    pred = model.predict_value(data.test)
    y = data.test[LABEL].to_numpy(float)
    split_info = {k: v for k, v in data.describe().items() if rows is not None or not k.startswith("refit_")}
    split_info = {**split_info, "mean_ltv": round(float(y.mean()), 4),
                  "buyers_share": round(float((y > 0).mean()), 4)}
    ev = compare("ltv", y, pred, base, M.VALUE, "gini", split_info, n_boot=cfg.n_boot, seed=cfg.seed)
    ev.notes.extend(notes)
    ev.extra["fit"] = info
    return ev, model, data, {"model": pred, **base}


def evaluate(store: Store, *, cutoff: Any, horizon: int | None = None, config: Any = None, baselines: bool = True,
             progress: Any = None) -> Evaluation:
    """Backtest at `cutoff` (see `training.trainers`)."""
    cfg = load_config(config, horizon_days=horizon)
    ev, *_ = run_backtest(store, cutoff=cutoff, cfg=cfg, with_bgnbd=baselines, progress=progress)
    return ev


def figures(y: np.ndarray, scores: dict[str, np.ndarray], model: LtvModel) -> dict[str, Any]:
    return {"ltv_deciles": plots.value_deciles(y, scores["model"]), "gain": plots.gain(y, scores),
            "lift": plots.lift(y, scores), "feature_importance": plots.feature_importance(importance(model))}


def train(store: Store, *, settings: Settings, cutoff: Any = None, horizon: int | None = None, config: Any = None,
          promote: bool = True, progress: Any = None, with_bgnbd: bool = False) -> TrainOutcome:
    """Backtest at `cutoff` (default: the latest month start with a full label window), log, register, gate."""
    from training.runlog import train_and_record

    return train_and_record(store, settings=settings, cutoff=cutoff, horizon=horizon, config=config, promote=promote,
                            progress=progress, with_bgnbd=with_bgnbd, load_config=load_config,
                            run_backtest=run_backtest, figures=figures, spec=SPEC, entry=ENTRY, label=LABEL)
