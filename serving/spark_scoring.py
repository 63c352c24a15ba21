"""Batch scoring on Spark (issue 9): the champion churn / LTV / timing models score a Spark DataFrame of features.

Each model is the same unwrapped pyfunc PythonModel the local batch and the online service call, through the same
functions (`serving.compose.churn_columns` / `ltv_columns` / `timing_columns`), inside `mapInPandas`: every Arrow
batch of feature rows becomes one pandas frame, scored by the three models at once (one pass over the features).
The models are shipped to the executors with the task closure (cloudpickle, as MLflow itself stores a pyfunc),
once per task, never per row. The output schema is taken from scoring a few rows on the driver, so it always
matches what the models return (e.g. the timing model's `p_<d>` horizons).

Output: Parquet partitioned by `bucket = pmod(hash(member_id), buckets)`, written by the executors (no collection to
the driver). Recommendations are not here yet: they need a member's item history (several rows per member), i.e.
a `groupBy(member_id).applyInPandas` over the recent-items relation; see README "Running on a cluster".
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from features.contract import MEMBER_ID
from serving.compose import churn_columns, ltv_columns, timing_columns
from serving.models import ModelSet

SPARK_MODELS = ("churn", "ltv", "timing")


def score_frame(feats: pd.DataFrame, models: dict[str, Any], as_of: pd.Timestamp) -> pd.DataFrame:
    """member_id + churn_probability + ltv + timing columns for one pandas frame of features (local and Spark)."""
    out = pd.DataFrame({MEMBER_ID: feats[MEMBER_ID].astype("string").to_numpy()})
    if "churn" in models:
        c = churn_columns(models["churn"], feats, 0)
        out["churn_probability"] = c["churn_probability"].to_numpy()
    if "ltv" in models:
        out["ltv"] = ltv_columns(models["ltv"], feats)["ltv"].to_numpy()
    if "timing" in models:
        t = timing_columns(models["timing"], feats, as_of)
        for col in t.columns:
            if col != MEMBER_ID:
                out[col] = t[col].to_numpy()
    return out


def score_spark(spark: Any, features: Any, models: ModelSet, as_of: object, out: str | Path, *,
                buckets: int = 16, names: tuple[str, ...] = SPARK_MODELS) -> Any:
    """Score the Spark DataFrame `features` (member_id + the feature columns) with the loaded `models` and write
    partitioned Parquet to `out`; returns the scored Spark DataFrame (lazily re-readable from `out`)."""
    from pyspark.sql import functions as F

    from features.engine import as_timestamp

    t = as_timestamp(as_of, "as_of")
    missing = [n for n in names if models.get(n) is None]
    if missing:
        raise ValueError(f"no loaded champion for {missing}: {models.unavailable or 'not requested'}")
    if MEMBER_ID not in features.columns:
        raise ValueError(f"features DataFrame has no {MEMBER_ID!r} column; columns: {features.columns}")
    pms = {n: models.get(n).python_model for n in names}  # type: ignore[union-attr]
    sample = features.limit(5).toPandas()
    if len(sample) == 0:
        raise ValueError("features DataFrame is empty: nothing to score")
    schema = spark.createDataFrame(_for_spark(score_frame(sample, pms, t))).schema

    def score_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for b in batches:
            if len(b):
                yield _for_spark(score_frame(b, pms, t))

    scored = features.mapInPandas(score_batches, schema=schema)
    scored = scored.withColumn("bucket", F.expr(f"pmod(hash({MEMBER_ID}), {int(buckets)})"))
    scored.write.mode("overwrite").partitionBy("bucket").parquet(str(out))
    return spark.read.parquet(str(out))


def _for_spark(df: pd.DataFrame) -> pd.DataFrame:
    """Plain numpy/object dtypes Spark's Arrow conversion accepts under pandas 3 (string dtype → object)."""
    out = df.copy()
    for c in out.columns:
        if isinstance(out[c].dtype, pd.StringDtype):
            out[c] = out[c].astype(object)
    return out
