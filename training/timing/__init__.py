"""Next-purchase timing: a survival-aware LightGBM model (discrete-time hazard) and category replenishment cycles.

Modules:
- `config`: pydantic settings (bins, boosting, replenishment thresholds), loadable from YAML.
- `hazard`: person-period expansion and hazards → CDF / median / expected days (numpy only; used by the pyfunc).
- `replenishment`: per member × category purchase cycles, due dates and reminder flags (DuckDB; pure orders logic).
- `model`: trains the LightGBM hazard model on stacked cutoffs.
- `baselines`: mean inter-purchase gap (exponential) and BG/NBD (pymc-marketing) P(order within d).
- `evaluate`: C-index, AUC/Brier at d, integrated Brier score, median MAE, paired bootstrap; replenishment backtest.
- `pyfunc`: the MLflow PythonModel (needs nothing from `training` at load time).

Importing this package has no side effects and pulls in no heavy library.
"""
