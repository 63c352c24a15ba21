"""Churn trainer: LightGBM on stacked monthly cutoffs, early stopping on a later validation cutoff, calibrated on
rows the booster never saw, reason codes from `pred_contrib` (DESIGN §5).

Validation members are split in two halves by a hash of their id: one half early-stops the booster, the other fits
the calibration (Platt by default: it keeps the ranking, so AUC is the booster's own).

`time_to_next` (on): a second booster learns log(1 + days to the next order), censored at the horizon, a richer target
than the 0/1 label; a logistic fit on the calibration half stacks it with the churn margin before calibration.
`refit` (on): once rounds are fixed on the validation cutoff, both boosters are refitted on every cutoff whose label
window ends by the test cutoff (training, in-between, validation), with the same rounds. Both were chosen on a nested
backtest (test at the validation cutoff) on Complete Journey, Online Retail and the synthetic store: mean AUC 0.863 →
0.869 (issue 5 lever table).
The refit model's stacking and calibration are cross-fitted on the refit rows (`calibration_folds` member folds, each
scored by boosters trained on the others with the refit's rounds): a calibration carried over from the first model
fits another model's margins (issue 5: Brier at test CJ .0635 → .0622, Online Retail .2333 → .2243).
`linear_blend` (on): a third, different learner joins the stack: an L2 logistic regression on signed-log,
standardised features (`training.linear`), fitted on the same rows, its out-of-fold margin weighted by the same
cross-fitted logistic stack (diversity, not seeds: issue 5 lever table).
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
from training.calibration import fit_calibrator
from training.config import BoosterConfig, load_config as _load_config
from training.evaluation import Evaluation, compare
from training.linear import fit_logistic
from training.member_pyfunc.churn import ChurnModel, stacked_margin
from training.member_pyfunc.linear import LinearScorer
from training.member_pyfunc.matrix import FeatureSpec
from training.registry import ModelSpec
from training.trainers import TrainOutcome

LABEL = "churn"
TIME_LABEL = "days_to_next"  # the auxiliary target (censored at the horizon by features.labels)
NON_FEATURES = frozenset({MEMBER_ID, "cutoff", *LABEL_COLUMNS})
ENTRY = "member_pyfunc.churn:ChurnModel"


class ChurnConfig(BoosterConfig):
    """Churn trainer settings (YAML keys of `member-ml train churn --config`)."""

    # learning rate and feature fraction chosen on the validation cutoff of Complete Journey (issue 5 lever table)
    learning_rate: float = Field(0.02, gt=0, le=1)
    feature_fraction: float = Field(0.5, gt=0, le=1)
    calibration: Literal["platt", "isotonic"] = "platt"
    # a second booster on log(1 + days to the next order) (censored at the horizon: a richer target than the 0/1
    # label), stacked with the churn margin by a logistic fit on the calibration half (issue 5 lever table)
    time_to_next: bool = True
    # the refit model's stacking and calibration are fitted on its own cross-fitted margins: the refit rows are cut
    # into `calibration_folds` member folds, each fold scored by boosters refitted (same rounds) on the others;
    # the rows at the last `calibration_cutoffs` refit cutoffs fit them (fewer than 2 folds: keep the first model's,
    # fitted on the validation half). Issue 5 lever table: Brier at test CJ .0635 → .0622, Online Retail .2333 →
    # .2243 (same AUC); calibrating on the last cutoff only lost (.0639, .2451)
    calibration_folds: int = Field(3, ge=0, le=10)
    calibration_cutoffs: int | None = Field(None, ge=1)  # None: every refit cutoff
    # a logistic regression on signed-log, standardised numeric features (a different learner on the same rows)
    # joins the time-to-next stack as a third input, its weight fitted with the stack on held-out / out-of-fold rows
    # (needs time_to_next). Nested backtest (test at the validation cutoff) AUC: Complete Journey .9068 → .9071,
    # Online Retail .7295 → .7300, synthetic .9732 → .9731 (issue 5 lever table)
    linear_blend: bool = True
    linear_c: float = Field(0.03, gt=0)  # its inverse L2 strength (C); .01–3 within .0002 AUC on the nested backtest


def load_config(path: str | Path | None = None, **overrides: Any) -> ChurnConfig:
    """Defaults, then the YAML file's keys, then non-None overrides."""
    return _load_config(ChurnConfig, path, **overrides)


def score(model: Any, backtest_set: dict[str, pd.DataFrame]) -> float:
    """The promotion gate's metric: AUC of the model's churn probability on the backtest's `test` frame."""
    test = backtest_set["test"]
    p = model.predict(None, test, params={"reasons": False})["churn_probability"].to_numpy()
    return M.auc(test[LABEL].to_numpy(), p)


SPEC = ModelSpec(name="churn", primary_metric="auc", scorer=score, greater_is_better=True)


def _halves(ids: pd.Series) -> np.ndarray:
    """A stable 50/50 split of members by a hash of their id (True = early-stopping half)."""
    return _member_folds(ids, 2) == 0


def lgb_params(cfg: ChurnConfig) -> dict[str, Any]:
    return cfg.lgb_params("binary")


def fit(train: pd.DataFrame, valid: pd.DataFrame, cfg: ChurnConfig,
        refit: pd.DataFrame | None = None) -> tuple[ChurnModel, dict[str, Any]]:
    """Fit the booster on `train`, early-stop on half of `valid`, calibrate on the other half.

    With `refit` rows (every row whose label window ends by the test cutoff) the final booster is refitted on them
    with the early-stopped rounds × `refit_rounds_scale`, and its stacking and calibration are cross-fitted on those
    rows (`_refit`; with `calibration_folds` 0 the first model's, fitted on the validation half, are kept).
    """
    import lightgbm as lgb

    for name, df in (("training", train), ("validation", valid)):
        if df[LABEL].nunique() < 2:
            raise ValueError(f"{name} rows have a single churn class ({df[LABEL].iloc[0] if len(df) else 'none'}); "
                             "need churners and non-churners (more members or cutoffs)")
    derived, why = backtest.fit_derived(train, cfg.horizon_days, cfg.bgnbd_features)
    if derived is not None:
        train, valid = derived.augment(train), derived.augment(valid)
    spec = FeatureSpec.from_frame(train, exclude=NON_FEATURES | set(cfg.exclude_features))
    es = _halves(valid[MEMBER_ID])
    x_tr = spec.matrix(train)
    x_va = spec.matrix(valid)
    cat = spec.categorical_indices or "auto"
    d_tr = lgb.Dataset(x_tr, train[LABEL].to_numpy(float), feature_name=spec.columns, categorical_feature=cat,
                       free_raw_data=False)
    d_es = lgb.Dataset(x_va[es], valid[LABEL].to_numpy(float)[es], reference=d_tr)
    booster = lgb.train(lgb_params(cfg), d_tr, num_boost_round=cfg.num_boost_round, valid_sets=[d_es],
                        valid_names=["validation"],
                        callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)])
    booster = booster if booster.best_iteration <= 0 else _truncate(booster)
    y_cal = valid[LABEL].to_numpy(float)[~es]
    cal_margin = booster.predict(x_va[~es], raw_score=True)
    aux = _fit_time_to_next(train, valid, x_tr, x_va, es, spec, cfg) if cfg.time_to_next else None
    stack = linear = None
    if aux is not None:
        linear = _fit_linear(x_tr, train[LABEL].to_numpy(float), spec, cfg)
        lin_cal = linear(x_va[~es]) if linear is not None else None
        stack = _fit_stack(cal_margin, aux.predict(x_va[~es]), y_cal, lin_cal)
        cal_margin = stacked_margin(stack, cal_margin, aux.predict(x_va[~es]), lin_cal)
    calibrator = fit_calibrator(cal_margin, y_cal, cfg.calibration)
    model = ChurnModel(booster, spec, calibrator, derived, aux, stack, linear)
    info = {"best_iteration": booster.current_iteration(), "train_rows": len(train),
            "early_stopping_rows": int(es.sum()), "calibration_rows": int((~es).sum()),
            "features": len(spec.columns), **backtest.derived_info(derived, why),
            **({"time_to_next_trees": aux.num_trees(), "stack_churn_margin": round(stack[0], 4),
                "stack_time_to_next": round(stack[1], 4)} if aux is not None else {}),
            **({"stack_linear": round(stack[3], 4)} if linear is not None else {})}
    if refit is not None:
        model, more = _refit(refit, cfg, model)
        info.update(more)
    return model, info


def _time_target(df: pd.DataFrame, horizon_days: int) -> np.ndarray:
    """log(1 + days to the next paid order), censored at the horizon (NaN where the label is missing)."""
    return np.log1p(pd.to_numeric(df[TIME_LABEL], errors="coerce").to_numpy(float).clip(0, horizon_days))


def _fit_time_to_next(train: pd.DataFrame, valid: pd.DataFrame, x_tr: np.ndarray, x_va: np.ndarray,
                      es: np.ndarray, spec: FeatureSpec, cfg: ChurnConfig) -> Any:
    """The auxiliary L2 booster on log(1 + days to next order), early-stopped on the same validation half; None
    when the frames lack the label or it does not vary."""
    import lightgbm as lgb

    if TIME_LABEL not in train.columns or TIME_LABEL not in valid.columns:
        return None
    y, yv = _time_target(train, cfg.horizon_days), _time_target(valid, cfg.horizon_days)
    ok, okv = np.isfinite(y), np.isfinite(yv) & es
    if ok.sum() < 2 or okv.sum() < 2 or np.unique(y[ok]).size < 2:
        return None
    d = lgb.Dataset(x_tr[ok], y[ok], feature_name=spec.columns, categorical_feature=spec.categorical_indices or "auto",
                    free_raw_data=False)
    dv = lgb.Dataset(x_va[okv], yv[okv], reference=d)
    b = lgb.train({**cfg.lgb_params("regression"), "metric": "l2"}, d, num_boost_round=cfg.num_boost_round,
                  valid_sets=[dv], callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)])
    return b if b.best_iteration <= 0 else _truncate(b)


def _fit_linear(x: np.ndarray, y: np.ndarray, spec: FeatureSpec, cfg: ChurnConfig) -> LinearScorer | None:
    """The linear learner on rows `x` (None when `linear_blend` is off)."""
    return fit_logistic(x, y, spec.categorical_indices, cfg.linear_c) if cfg.linear_blend else None


def _fit_stack(margin: np.ndarray, aux: np.ndarray, y: np.ndarray,
               linear: np.ndarray | None = None) -> tuple[float, ...]:
    """(a, c, b) of a logistic fit y ~ a·margin + c·aux + b on held-out rows (the two boosters' blend); with the
    linear learner's margin, (a, c, b, d) of y ~ a·margin + c·aux + b + d·linear."""
    from sklearn.linear_model import LogisticRegression

    if np.unique(y).size < 2:
        return (1.0, 0.0, 0.0) if linear is None else (1.0, 0.0, 0.0, 0.0)
    cols = np.c_[margin, aux] if linear is None else np.c_[margin, aux, linear]
    lr = LogisticRegression(C=1e6, max_iter=1000).fit(cols, y)
    out = (float(lr.coef_[0, 0]), float(lr.coef_[0, 1]), float(lr.intercept_[0]))
    return out if linear is None else (*out, float(lr.coef_[0, 2]))


def _refit(rows: pd.DataFrame, cfg: ChurnConfig, first: ChurnModel) -> tuple[ChurnModel, dict[str, Any]]:
    """The final booster(s) on all `rows` with the validation-chosen rounds (scaled); stacking and calibration
    cross-fitted on the rows themselves (`_cross_fit`), or the first model's with `calibration_folds` < 2."""
    if rows[LABEL].nunique() < 2:
        raise ValueError("refit rows have a single churn class; need churners and non-churners")
    derived, _ = backtest.fit_derived(rows, cfg.horizon_days, cfg.bgnbd_features)
    if derived is not None:
        rows = derived.augment(rows)
    spec = FeatureSpec.from_frame(rows, exclude=NON_FEATURES | set(cfg.exclude_features))
    x = spec.matrix(rows)
    y = rows[LABEL].to_numpy(float)
    rounds = backtest.refit_rounds(first.booster.current_iteration(), cfg.refit_rounds_scale)
    aux_rounds = backtest.refit_rounds(first.aux.num_trees(), cfg.refit_rounds_scale) if first.aux is not None else 0
    yt = _time_target(rows, cfg.horizon_days) if first.aux is not None else None
    booster, aux = _train_pair(x, y, yt, spec, cfg, rounds, aux_rounds)
    with_linear = aux is not None and getattr(first, "linear", None) is not None
    linear = _fit_linear(x, y, spec, cfg) if with_linear else None
    info = {"refit_rows": len(rows), "refit_rounds": rounds,
            "refit_cutoffs": int(pd.to_datetime(rows["cutoff"]).nunique()),
            **({f"refit_{k}": v for k, v in backtest.derived_info(derived, None).items()} if derived else {})}
    stack = first.stack if aux is not None else None
    calibrator = first.calibrator
    if cfg.calibration_folds >= 2:
        margin, aux_pred, use = _cross_fit(rows, x, y, yt, spec, cfg, rounds, aux_rounds)
        if np.unique(y[use]).size == 2:
            if aux is not None:
                lin = _cross_fit_linear(rows, x, y, spec, cfg) if linear is not None else None
                stack = _fit_stack(margin[use], aux_pred[use], y[use], None if lin is None else lin[use])
                margin = stacked_margin(stack, margin, aux_pred, lin)
            calibrator = fit_calibrator(margin[use], y[use], cfg.calibration)
            info.update({"calibration": f"cross-fitted on the refit rows ({cfg.calibration_folds} member folds)",
                         "calibration_rows": int(use.sum()),
                         **({"stack_churn_margin": round(stack[0], 4), "stack_time_to_next": round(stack[1], 4)}
                            if aux is not None else {}),
                         **({"stack_linear": round(stack[3], 4)} if linear is not None else {})})
    return ChurnModel(booster, spec, calibrator, derived, aux, stack, linear), info


def _train_pair(x: np.ndarray, y: np.ndarray, yt: np.ndarray | None, spec: FeatureSpec, cfg: ChurnConfig,
                rounds: int, aux_rounds: int) -> tuple[Any, Any]:
    """The churn booster (and the time-to-next booster when `yt` is given) on rows `x` with fixed rounds."""
    import lightgbm as lgb

    cat = spec.categorical_indices or "auto"
    booster = lgb.train(lgb_params(cfg), lgb.Dataset(x, y, feature_name=spec.columns, categorical_feature=cat,
                                                     free_raw_data=False), num_boost_round=rounds)
    if yt is None:
        return booster, None
    ok = np.isfinite(yt)
    aux = lgb.train({**cfg.lgb_params("regression"), "metric": "l2"},
                    lgb.Dataset(x[ok], yt[ok], feature_name=spec.columns, categorical_feature=cat),
                    num_boost_round=aux_rounds)
    return booster, aux


def _member_folds(ids: pd.Series, k: int) -> np.ndarray:
    """Fold 0..k-1 of each row by a hash of its member id (a member's rows at every cutoff share a fold)."""
    return (pd.util.hash_pandas_object(ids.astype(str), index=False).to_numpy() % k).astype(np.int64)


def _cross_fit(rows: pd.DataFrame, x: np.ndarray, y: np.ndarray, yt: np.ndarray | None, spec: FeatureSpec,
               cfg: ChurnConfig, rounds: int, aux_rounds: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Out-of-fold churn margins (and time-to-next predictions) for every refit row, and the rows that fit the
    calibration (those at the last `calibration_cutoffs` cutoffs).

    Folds are by member (a hash of the id), so no member's rows at other cutoffs help score it; each fold is scored
    by boosters trained on the other folds with the refit's own rounds, so the margins are those of the refit model
    on rows it did not see.
    """
    k = cfg.calibration_folds
    fold = _member_folds(rows[MEMBER_ID], k)
    margin = np.zeros(len(rows))
    aux_pred = np.zeros(len(rows)) if yt is not None else None
    scored = np.zeros(len(rows), dtype=bool)
    for i in range(k):
        held = fold == i
        if not held.any() or held.all():
            continue
        scored |= held
        b, a = _train_pair(x[~held], y[~held], None if yt is None else yt[~held], spec, cfg, rounds, aux_rounds)
        margin[held] = b.predict(x[held], raw_score=True)
        if a is not None:
            aux_pred[held] = a.predict(x[held])
    cut = pd.to_datetime(rows["cutoff"]).to_numpy()
    use = scored
    if cfg.calibration_cutoffs is not None:
        use = scored & (cut >= np.sort(np.unique(cut))[-min(cfg.calibration_cutoffs, np.unique(cut).size)])
    return margin, aux_pred, use


def _cross_fit_linear(rows: pd.DataFrame, x: np.ndarray, y: np.ndarray, spec: FeatureSpec,
                      cfg: ChurnConfig) -> np.ndarray:
    """Out-of-fold linear margins for every refit row, on the member folds of `_cross_fit`."""
    fold = _member_folds(rows[MEMBER_ID], cfg.calibration_folds)
    out = np.zeros(len(rows))
    for i in range(cfg.calibration_folds):
        held = fold == i
        if held.any() and not held.all():
            out[held] = _fit_linear(x[~held], y[~held], spec, cfg)(x[held])
    return out


def _truncate(booster: Any) -> Any:
    """Keep only the trees up to the best iteration (so every consumer predicts the early-stopped model)."""
    import lightgbm as lgb

    return lgb.Booster(model_str=booster.model_to_string(num_iteration=booster.best_iteration))


def importance(model: ChurnModel) -> pd.Series:
    return pd.Series(model.booster.feature_importance("gain"), index=model.spec.columns)


def _baseline_scores(store: Store, data: backtest.BacktestData, with_bgnbd: bool, notes: list[str],
                     progress: Any = None, bgnbd: pd.DataFrame | None = None) -> dict[str, np.ndarray]:
    scores = {"recency": data.test["recency_days"].to_numpy(float)}
    if not with_bgnbd:
        return scores
    if not baselines.has_pymc_marketing():
        notes.append(baselines.BGNBD_HINT)
        return scores
    task = progress.add_task("BG/NBD baseline (pymc-marketing, MAP)", total=None) if progress else None
    orders = baselines.read_orders(store, data.test_cutoff)
    exp = bgnbd if bgnbd is not None else baselines.bgnbd_expectations(orders, data.test_cutoff, data.horizon_days,
                                                                        data.test[MEMBER_ID])
    exp = exp.set_index(MEMBER_ID).reindex(data.test[MEMBER_ID].astype(str).to_numpy()).fillna(0.0)
    scores["bgnbd"] = -exp["expected_purchases"].to_numpy()  # fewer expected purchases = more likely to churn
    if task is not None:
        progress.update(task, completed=1, total=1)
    return scores


def run_backtest(store: Store, *, cutoff: Any, cfg: ChurnConfig, with_bgnbd: bool, progress: Any = None,
                 data: backtest.BacktestData | None = None, bgnbd: pd.DataFrame | None = None
                 ) -> tuple[Evaluation, ChurnModel, backtest.BacktestData, dict[str, np.ndarray]]:
    """Fit on cutoffs before `cutoff`, test at `cutoff`; return the evaluation, model, data and all scores."""
    data = data or backtest.load_with_progress(store, cutoff, cfg.horizon_days, cfg.max_train_cutoffs, progress,
                                               cfg.cutoff_every_days, refit=cfg.refit)
    fit_task = progress.add_task("LightGBM churn model", total=None) if progress else None
    rows = backtest.refit_rows(data, cfg.refit)
    if rows is not None:
        backtest.check_refit_rows(rows, data.test_cutoff, data.horizon_days)
    model, info = fit(data.train, data.valid, cfg, rows)
    if progress:
        progress.update(fit_task, completed=1, total=1)
    notes: list[str] = []
    base = _baseline_scores(store, data, with_bgnbd, notes, progress, bgnbd)
    p = model.predict_proba(data.test)
    y = data.test[LABEL].to_numpy(float)
    split_info = {**data.describe(), "churn_rate": round(float(y.mean()), 4)}
    ev = compare("churn", y, p, base, M.CLASSIFICATION, "auc", split_info,
                 scale_free_baselines=frozenset(base), n_boot=cfg.n_boot, seed=cfg.seed)
    ev.notes.extend(notes)
    ev.extra["fit"] = info
    return ev, model, data, {"model": p, **base}


def evaluate(store: Store, *, cutoff: Any, horizon: int | None = None, config: Any = None, baselines: bool = True,
             progress: Any = None) -> Evaluation:
    """Backtest at `cutoff` (see `training.trainers`)."""
    cfg = load_config(config, horizon_days=horizon)
    ev, *_ = run_backtest(store, cutoff=cutoff, cfg=cfg, with_bgnbd=baselines, progress=progress)
    return ev


def figures(y: np.ndarray, scores: dict[str, np.ndarray], model: ChurnModel) -> dict[str, Any]:
    ranked = {k: v for k, v in scores.items()}
    return {"roc": plots.roc(y, ranked), "precision_recall": plots.precision_recall(y, ranked),
            "calibration": plots.calibration(y, {"model": scores["model"]}), "gain": plots.gain(y, ranked),
            "lift": plots.lift(y, ranked), "feature_importance": plots.feature_importance(importance(model))}


def train(store: Store, *, settings: Settings, cutoff: Any = None, horizon: int | None = None, config: Any = None,
          promote: bool = True, progress: Any = None, with_bgnbd: bool = False) -> TrainOutcome:
    """Backtest at `cutoff` (default: the latest month start with a full label window), log, register, gate."""
    from training.runlog import train_and_record

    return train_and_record(store, settings=settings, cutoff=cutoff, horizon=horizon, config=config, promote=promote,
                            progress=progress, with_bgnbd=with_bgnbd, load_config=load_config,
                            run_backtest=run_backtest, figures=figures, spec=SPEC, entry=ENTRY, label=LABEL)
