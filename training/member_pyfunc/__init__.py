"""Self-contained MLflow pyfunc models (what gets loaded by serving and batch scoring).

Everything in this package imports only numpy, pandas, lightgbm and mlflow, and refers to its siblings by relative
import, so it works both as `training.member_pyfunc` (in the repo) and as the top-level package `member_pyfunc`
copied into each logged model's `code/` folder (`code_paths`). Loading a model therefore needs nothing from
`training`: see `training/model_logging.py` for how a model is logged.

Convention for every model here: `predict(context, frame)` takes a feature DataFrame (the output of
`features.pipeline.compute_features`) and returns a DataFrame with `member_id` plus the model's outputs. Serving
validates input once at its edge and calls `loaded.unwrap_python_model().predict(None, frame)` directly.
"""
