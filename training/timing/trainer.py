"""Timing trainer, plugged into `member-ml train timing` / `member-ml evaluate timing` (see `training.trainers`).

Backtest layout: `training.backtest` (the same for churn, LTV and timing): training cutoffs whose label windows end by
the validation cutoff V, V itself for early stopping, the test cutoff T. The hazard model then is refitted with the
early-stopped number of rounds on the training cutoffs, V, and the month starts between V and T with their windows
censored at T (labels of those cutoffs use only rows before T: a survival model can learn from a window cut short,
where a classifier could not). Baselines on the same test members: mean inter-purchase gap and BG/NBD.
Replenishment is backtested at T too (hit rate of "due within 14 days", MAE of the due date).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.contract import MEMBER_ID
from features.store import Store
from member_ml.settings import Settings
from training import backtest, plots
from training.baselines import BGNBD_HINT, has_pymc_marketing, read_orders
from training.evaluation import Evaluation
from training.member_pyfunc.timing import TimingModel
from training.member_pyfunc.timing_hazard import cdf_at, median_days
from training.registry import ModelSpec
from training.timing.baselines import CurvePrediction, bgnbd_baseline, gap_baseline
from training.timing.config import TimingConfig, load_config
from training.timing.evaluate import compare_curves, concordance_bootstrap, restricted_mean
from training.timing.model import APPROACH, APPROACH_WHY, DURATION, EVENT, FitResult, fit_timing_model
from training.trainers import TrainOutcome

ENTRY = "member_pyfunc.timing:TimingModel"
TASK = "next_purchase"


def model_curve(model: TimingModel, frame: pd.DataFrame, horizon: int, name: str = "model") -> CurvePrediction:
    """The model's CDF on days 1..horizon and its median, for evaluation."""
    h = model.hazards(frame)
    return CurvePrediction(name, cdf_at(h, model.edges, np.arange(1, horizon + 1)),
                           median_days(h, model.edges, float(model.meta["max_days"])))


def score(model: Any, backtest_set: dict[str, pd.DataFrame]) -> float:
    """The promotion gate's metric: C-index of the model's restricted mean time on the backtest's `test` frame."""
    test = backtest_set["test"]
    horizon = int(round(float(test[DURATION].max()))) if len(test) else 1
    horizon = max(min(horizon, int(model.horizon_days)), 1)
    curve = model_curve(model, test, horizon)
    c = concordance_bootstrap(test[DURATION].to_numpy(float), test[EVENT].to_numpy(float) > 0.5,
                              {"m": -restricted_mean(curve.cdf)})
    return float(c["m"][0])


SPEC = ModelSpec(name="timing", primary_metric="c_index", scorer=score, greater_is_better=True)


def _config(config: Any, horizon: int | None) -> TimingConfig:
    cfg = config if isinstance(config, TimingConfig) else load_config(config)
    if horizon is not None:
        cfg = cfg.model_copy(update={"hazard": cfg.hazard.model_copy(update={"horizon_days": int(horizon),
                                                                            "bin_edges": None})})
    return cfg


def censored_extras(store: Store, after: pd.Timestamp, test_cutoff: pd.Timestamp, horizon: int) -> pd.DataFrame:
    """Month starts strictly between `after` and the test cutoff, labels censored at the test cutoff."""
    from features.training_set import build_training_set, monthly_cutoffs

    parts = []
    for c in monthly_cutoffs(after + pd.Timedelta(days=1), test_cutoff - pd.Timedelta(days=1)):
        h = int(min(horizon, (test_cutoff - c).days))
        if h < 1:
            continue
        ts = build_training_set(store, [c], churn_horizon=h, ltv_horizon=h, timing_horizon=h)
        parts.append(ts.frame)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _progress_task(progress: Any, text: str, total: int | None = None) -> Callable[[], None]:
    if progress is None:
        return lambda: None
    task = progress.add_task(text, total=total)
    return lambda: progress.update(task, completed=total or 1, total=total or 1)


def run_backtest(store: Store, *, cutoff: Any, cfg: TimingConfig, with_bgnbd: bool, progress: Any = None,
                 n_boot: int | None = None) -> tuple[Evaluation, FitResult, backtest.BacktestData,
                                                     dict[str, CurvePrediction]]:
    """Fit on cutoffs before `cutoff`, test at `cutoff`: evaluation, fitted model, data and every method's curve."""
    horizon = cfg.hazard.horizon_days
    split = backtest.plan(store, cutoff, horizon, cfg.train_cutoffs)
    task = progress.add_task("features + labels per cutoff", total=len(split.train) + 2) if progress else None
    data = backtest.load(store, cutoff, horizon, max_train_cutoffs=cfg.train_cutoffs,
                         progress=(lambda _c: progress.advance(task)) if progress else None)
    done = _progress_task(progress, "cutoffs censored at the test cutoff")
    extras = censored_extras(store, data.split.validation, data.test_cutoff, horizon)
    done()
    refit = pd.concat([f for f in (data.train, data.valid, extras) if len(f)], ignore_index=True)
    done = _progress_task(progress, "LightGBM discrete-time hazard")
    fit = fit_timing_model(data.train, data.valid, config=cfg, refit=refit)
    done()
    test = data.test
    duration = test[DURATION].to_numpy(float)
    event = test[EVENT].to_numpy(float) > 0.5
    curves = {"model": model_curve(fit.model, test, horizon)}
    notes: list[str] = []
    orders = read_orders(store, data.test_cutoff)
    curves["mean_gap"] = gap_baseline(orders, data.test_cutoff, test[MEMBER_ID], horizon, cfg.hazard.max_days)
    if with_bgnbd:
        if has_pymc_marketing():
            done = _progress_task(progress, "BG/NBD baseline (pymc-marketing, MAP)")
            curves["bgnbd"] = bgnbd_baseline(orders, data.test_cutoff, test[MEMBER_ID], horizon,
                                             cfg.hazard.max_days)
            done()
        else:
            notes.append(f"BG/NBD baseline unavailable: {BGNBD_HINT}")
    else:
        notes.append("BG/NBD baseline not computed (it is part of `evaluate` and the benchmark)")
    done = _progress_task(progress, "metrics + paired bootstrap")
    res = compare_curves(duration, event, curves["model"], [c for k, c in curves.items() if k != "model"],
                         n_boot=cfg.bootstrap if n_boot is None else n_boot, seed=cfg.hazard.seed,
                         cindex_max_members=cfg.cindex_max_members)
    done()
    metrics = res["metrics"]
    bases = {k: v for k, v in metrics.items() if k != "model"}
    best = max(bases, key=lambda b: bases[b]["c_index"]) if bases else None
    split_info = {**data.describe(), "event_rate": round(res["event_rate"], 4),
                  "refit_rows": int(len(refit)), "censored_extra_cutoffs": int(extras["cutoff"].nunique())
                  if len(extras) else 0}
    ev = Evaluation(task=TASK, split=split_info, model=metrics["model"], baselines=bases,
                    gain_ci95=res["gain_ci95"].get(best, {}) if best else {}, best_baseline=best,
                    primary="c_index", notes=notes)
    ev.extra["gain_ci95_by_baseline"] = {b: {k: [round(x, 4) for x in v] for k, v in g.items()}
                                         for b, g in res["gain_ci95"].items()}
    ev.extra["approach"] = APPROACH
    ev.extra["fit"] = {"best_iteration": fit.best_iteration, "person_period_rows": fit.train_rows,
                       "valid_logloss": fit.valid_logloss}
    return ev, fit, data, curves


def evaluate(store: Store, *, cutoff: Any, horizon: int | None = None, config: Any = None, baselines: bool = True,
             progress: Any = None) -> Evaluation:
    """Backtest at `cutoff` (see `training.trainers`); adds the replenishment backtest when orders have categories."""
    from training.timing.replenishment import replenishment_backtest

    cfg = _config(config, horizon)
    ev, *_ = run_backtest(store, cutoff=cutoff, cfg=cfg, with_bgnbd=baselines, progress=progress)
    try:
        ev.extra["replenishment"] = replenishment_backtest(store, cutoff, horizon=cfg.hazard.horizon_days,
                                                           params=cfg.replenishment)
    except ValueError as e:  # e.g. no categories in the store: say so, the timing table stands on its own
        ev.notes.append(f"replenishment backtest skipped: {e}")
    return ev


def figures(test: pd.DataFrame, curves: dict[str, CurvePrediction], fit: FitResult) -> dict[str, Any]:
    """ROC and calibration at 14/30 days, CDF calibration over the horizon, feature importance."""
    from training.timing.plots import cdf_calibration

    duration = test[DURATION].to_numpy(float)
    event = test[EVENT].to_numpy(float) > 0.5
    out: dict[str, Any] = {"cdf_calibration": cdf_calibration(duration, event, curves)}
    for d in (14, 30):
        if d > curves["model"].cdf.shape[1]:
            continue
        known = event & (duration < d) | (duration >= d)
        y = (event & (duration < d))[known].astype(float)
        probs = {k: c.cdf[known, d - 1] for k, c in curves.items()}
        out[f"roc_{d}d"] = plots.roc(y, probs, title=f"Ordered within {d} days: ROC")
        out[f"calibration_{d}d"] = plots.calibration(y, probs, title=f"P(order within {d} days): calibration")
    out["feature_importance"] = plots.feature_importance(fit.importance)
    return out


def train(store: Store, *, settings: Settings, cutoff: Any = None, horizon: int | None = None, config: Any = None,
          promote: bool = True, progress: Any = None, with_bgnbd: bool = False) -> TrainOutcome:
    """Backtest at `cutoff` (default: the latest month start with a full window), log, register and gate."""
    import mlflow

    from training.runlog import record_run

    cfg = _config(config, horizon)
    h = cfg.hazard.horizon_days
    t = pd.Timestamp(cutoff) if cutoff is not None else backtest.default_cutoff(store, h)
    ev, fit, data, curves = run_backtest(store, cutoff=t, cfg=cfg, with_bgnbd=with_bgnbd, progress=progress)
    model = fit.model
    cols = [MEMBER_ID, *model.spec.columns]
    params = {"approach": APPROACH, "horizon_days": h, "bin_edges": ",".join(f"{e:g}" for e in model.edges),
              "train_cutoffs": cfg.train_cutoffs, "test_cutoff": t.date().isoformat(),
              **{f"lgb.{k}": v for k, v in cfg.hazard.model_dump().items() if k not in ("bin_edges", "horizon_days")},
              **{f"replenishment.{k}": v for k, v in cfg.replenishment.to_dict().items()},
              **ev.extra["fit"]}
    out = record_run(
        spec=SPEC, settings=settings, store=store, model=model, entry=ENTRY, params=params,
        metrics=ev.model, baselines=ev.baselines, figures=figures(data.test, curves, fit),
        manifest=data.manifest, manifest_frame=data.manifest_frame(EVENT), label=EVENT,
        backtest={"test": data.test[[*cols, DURATION, EVENT]]}, input_example=data.test[cols].head(5),
        cutoffs=[*data.split.train, data.split.validation, t], horizon_days=h, promote=promote, notes=ev.notes)
    client = mlflow.MlflowClient()
    client.set_tag(out.run_id, "approach", APPROACH)
    client.set_tag(out.run_id, "mlflow.note.content", APPROACH_WHY)
    return out
