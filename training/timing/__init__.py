"""Next-purchase timing: a survival-aware LightGBM model (discrete-time hazard) and category replenishment cycles.

Modules:
- `config`: pydantic settings (day bins, boosting, replenishment thresholds), loadable from YAML.
- `model`: fits the LightGBM hazard on stacked cutoffs (person-period rows; why this approach: `model.APPROACH_WHY`).
- `baselines`: mean inter-purchase gap (exponential) and BG/NBD (pymc-marketing) P(order within d).
- `evaluate`: C-index, AUC/Brier at 14 and 30 days, integrated Brier score, median MAE, paired bootstrap intervals.
- `replenishment`: the cycle estimator (re-exported) plus its held-out backtest and its error against true cycles.
- `trainer`: `member-ml train timing` / `member-ml evaluate timing` (plugged in via `training.trainers`).
- `plots`: the CDF calibration figure.

What gets served lives in `training/member_pyfunc/` (`timing.py`: the pyfunc, `timing_hazard.py`: hazards → CDF,
median, expected days; `replenishment.py`: the cycle estimator), so a loaded model needs nothing from `training`.
Importing this package has no side effects and pulls in no heavy library.
"""
