"""Features, loyalty state and training sets on Spark, kept as Spark DataFrames (never collected to the driver).

`features.engine.SparkEngine.run` returns pandas (fine for tests and moderate stores); this module is the scalable
path used by batch scoring on Spark (serving/spark_batch.py), `member-ml features --engine spark` and training sets:

- `spark_features(spark, store, as_of)`: `features.pipeline.compute_features_and_loyalty` on Spark. The SQL
  features are the definitions of features/definitions (transpiled by sqlglot); the loyalty ledger
  (`loyalty.batch.member_state`, pandas) runs in `groupBy(bucket).applyInPandas` over the rows
  `features.pipeline.loyalty_queries` selects: a bucket is a hash of member_id, so a member's whole history is in one
  pandas call, and the frames it gets have the dtypes `toPandas()` gives (what the engines hand to pandas code).
- `spark_training_set(spark, store, cutoffs, out)`: features + labels at every cutoff, stacked and written as Parquet
  partitioned by cutoff (the frame `features.training_set.build_training_set` gives, at any size), with an optional
  stratified sample by churn label (negatives down-sampled, their weight kept in `sample_weight`).
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from features.contract import MEMBER_ID
from features.store import Store

BUCKET = "_bucket"

#: Spark types of the loyalty state columns carried into the scores (as `loyalty.batch.member_state` returns them;
#: tests/test_spark_batch.py compares them with the local batch output)
LOYALTY_TYPES: dict[str, str] = {
    "tier": "string", "tier_rank": "bigint", "next_tier": "string", "spend_to_next_tier": "double",
    "qualifying_spend": "double", "points_balance": "bigint", "points_expiring_30d": "bigint",
    "discount_rate": "double", "points_multiplier": "double", "priority_shipping": "boolean",
    "dedicated_service": "boolean", "birthday_gift": "boolean", "member_day": "boolean", "value_segment": "string",
    "lifecycle_segment": "string", "strategy": "string", "spend_12m": "double", "orders_12m": "bigint",
    "days_since_last_order": "double",
}
_PANDAS_TYPES = {"string": "string", "bigint": "Int64", "double": "float64", "boolean": "boolean"}



def pandas_dtypes(sdf: Any) -> dict[str, Any]:
    """The pandas dtypes `toPandas()` gives this DataFrame's columns (what the local engines hand to pandas code)."""
    return dict(sdf.limit(0).toPandas().dtypes)


def _loyalty_frame(spark: Any, tables: frozenset[str], t: pd.Timestamp, buckets: int) -> Any | None:
    """Spark DataFrame: member_id + LOYALTY_COLUMNS of `loyalty.batch.member_state`, one row per member with any row
    before `t` (None without the loyalty package)."""
    import pyspark.sql.functions as F

    from features.engine import to_dialect
    from features.pipeline import loyalty_queries, loyalty_state_fn

    if loyalty_state_fn() is None:
        return None
    parts, columns, dtypes = [], {}, {}
    for name, sql in loyalty_queries(tables, t).items():
        sdf = spark.sql(to_dialect(sql, "spark"))
        columns[name] = list(sdf.columns)
        dtypes[name] = pandas_dtypes(sdf)
        # one wide frame tagged by table (prefixed names: the tables' columns never collide)
        parts.append(sdf.select(F.col(MEMBER_ID), F.lit(name).alias("_t"),
                                *[F.col(f"`{c}`").alias(f"{name}__{c}") for c in sdf.columns]))
    union = parts[0]
    for p in parts[1:]:
        union = union.unionByName(p, allowMissingColumns=True)
    union = union.withColumn(BUCKET, F.expr(f"pmod(xxhash64({MEMBER_ID}), {int(buckets)})"))
    schema = ", ".join([f"{MEMBER_ID} string"] + [f"`{c}` {typ}" for c, typ in LOYALTY_TYPES.items()])

    def state(pdf: pd.DataFrame) -> pd.DataFrame:
        from features.pipeline import loyalty_state_fn as fn

        frames = {}
        for name, cols in columns.items():
            rows = pdf.loc[pdf["_t"] == name, [f"{name}__{c}" for c in cols]]
            rows.columns = cols
            frames[name] = rows.reset_index(drop=True).astype(dtypes[name])
        st = fn()(frames["orders"], frames.get("events"), frames.get("members"), t)
        out = pd.DataFrame({MEMBER_ID: st[MEMBER_ID].astype("string")})
        for c, typ in LOYALTY_TYPES.items():
            out[c] = st[c].astype(_PANDAS_TYPES[typ]) if c in st.columns else pd.Series(
                pd.NA, index=st.index, dtype=_PANDAS_TYPES[typ])
        return out

    return union.groupBy(BUCKET).applyInPandas(state, schema)


@dataclass
class SparkFeatures:
    """Point-in-time features of a store on Spark (not collected)."""

    frame: Any  #: member_id, the SQL features, the loyalty features: `compute_features`' columns, in its order
    state: Any | None  #: member_id + LOYALTY_TYPES columns of the loyalty ledger (None without the loyalty package)
    tables: frozenset[str]
    engine: Any  #: the SparkEngine holding the store's tables as views
    members: int
    buckets: int  #: member buckets of the grouped (pandas) stages


def spark_features(spark: Any, store: Store, as_of: object, *, chunk_size: int = 50_000) -> SparkFeatures:
    """`features.pipeline.compute_features_and_loyalty` on Spark: the same definitions (SparkEngine) and the same
    loyalty ledger (grouped by member bucket, `chunk_size` members per pandas call), kept as Spark DataFrames."""
    import pyspark.sql.functions as F

    from features.definitions import feature_plan
    from features.engine import SparkEngine, as_timestamp, sql_literal_timestamp
    from features.pipeline import LOYALTY_FEATURES

    t = as_timestamp(as_of, "as_of")
    eng = SparkEngine(spark)
    tables = eng.load(store)
    feats = eng.dataframe(feature_plan(sql_literal_timestamp(t), tables))
    n = feats.count()
    buckets = max(1, math.ceil(n / chunk_size))
    state = _loyalty_frame(spark, tables, t, buckets)
    if state is not None:  # joined as compute_features_and_loyalty joins them (left, float64)
        state = state.localCheckpoint(eager=True)
        feats = feats.join(state.select(MEMBER_ID, *[F.col(c).cast("double").alias(c) for c in LOYALTY_FEATURES]),
                           MEMBER_ID, "left")
    return SparkFeatures(feats, state, tables, eng, int(n), buckets)


def spark_training_set(spark: Any, store: Store, cutoffs: Iterable[object], *, churn_horizon: int = 90,
                       ltv_horizon: int = 365, timing_horizon: int = 180, strict: bool = True,
                       chunk_size: int = 50_000, fractions: dict[int, float] | None = None,
                       seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """(Spark DataFrame, manifest): `build_training_set`'s frame on Spark: member_id, cutoff, features…, labels…,
    one row per member with a paid order before each cutoff.

    `fractions` ({0: 0.1, 1: 1.0}) samples the rows by churn label (`sampleBy`, seeded) and adds `sample_weight`
    = 1 / fraction, so a model trained on the sample with those weights still estimates the full population.
    """
    import pyspark.sql.functions as F

    from features.definitions import definitions_digest
    from features.definitions.labels import label_plan
    from features.engine import as_timestamp, sql_literal_timestamp
    from features.labels import LABEL_COLUMNS, _check_horizon, _window_check, data_end
    from features.pipeline import FEATURE_VERSION, categorical_features
    from features.training_set import source_fingerprint

    cuts = sorted({as_timestamp(c, "cutoff") for c in cutoffs})
    if not cuts:
        raise ValueError("cutoffs: give at least one cutoff date")
    horizons = {"churn_horizon": _check_horizon("churn_horizon", churn_horizon),
                "ltv_horizon": _check_horizon("ltv_horizon", ltv_horizon),
                "timing_horizon": _check_horizon("timing_horizon", timing_horizon)}
    if fractions is not None:
        _check_fractions(fractions)
    parts, features, tables = [], [], frozenset()
    for c in cuts:
        sf = spark_features(spark, store, c, chunk_size=chunk_size)
        end, has_amount = data_end(sf.engine)
        _window_check(end, c, horizons, strict)
        labels = sf.engine.dataframe(label_plan(sql_literal_timestamp(c), **horizons))
        if not has_amount:
            labels = labels.withColumn("ltv", F.lit(None).cast("double"))
        features = [x for x in sf.frame.columns if x != MEMBER_ID]
        tables = sf.tables
        part = labels.join(sf.frame, MEMBER_ID, "left").select(
            MEMBER_ID, F.lit(c.to_pydatetime()).cast("timestamp_ntz").alias("cutoff"), *features, *LABEL_COLUMNS)
        parts.append(part)
    frame = parts[0]
    for p in parts[1:]:
        frame = frame.unionByName(p)
    if fractions is not None:
        frame = sample_by_churn(frame, fractions, seed)
    manifest = {
        **source_fingerprint(store), "engine": "spark", "cutoffs": [c.isoformat() for c in cuts],
        "horizons": horizons, "features": features,
        "categorical_features": [x for x in categorical_features(tables) if x in features],
        "labels": list(LABEL_COLUMNS), "feature_version": FEATURE_VERSION, "definitions": definitions_digest(tables),
        "sample": {"by": "churn", "fractions": fractions, "seed": seed} if fractions else None,
    }
    return frame, manifest


def _check_fractions(fractions: dict[int, float]) -> None:
    if not fractions or set(fractions) - {0, 1} or not all(0 < f <= 1 for f in fractions.values()):
        raise ValueError(f"fractions: give churn labels 0/1 → fractions in (0, 1], got {fractions!r}")


def sample_by_churn(frame: Any, fractions: dict[int, float], seed: int = 0) -> Any:
    """A seeded stratified sample of a training set by churn label (`sampleBy`; a label absent from `fractions` is
    dropped) with `sample_weight` = 1 / fraction, so weighted training still estimates the whole population."""
    import pyspark.sql.functions as F

    _check_fractions(fractions)
    out = frame.sampleBy("churn", {k: float(v) for k, v in fractions.items()}, seed)
    weight = F.lit(None).cast("double")
    for k, v in fractions.items():
        weight = F.when(F.col("churn") == k, F.lit(1.0 / v)).otherwise(weight)
    return out.withColumn("sample_weight", weight)


def write_training_set(frame: Any, manifest: dict[str, Any], out: str | Path) -> dict[str, Any]:
    """Write a `spark_training_set` as a folder of Parquet partitioned by cutoff plus `<out>.manifest.json` (with
    the row counts); the folder replaces `out` only once complete."""
    import os
    import shutil
    import tempfile

    from features.store import atomic_write_json
    from features.training_set import manifest_path

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        frame.write.partitionBy("cutoff").parquet(str(tmp / "data"))
        spark = frame.sparkSession
        counts = {str(r["cutoff"]): int(r["count"]) for r in
                  spark.read.parquet(str(tmp / "data")).groupBy("cutoff").count().collect()}
        old = out.with_name(f".{out.name}.old-{os.getpid()}") if out.exists() else None
        if old is not None:
            os.replace(out, old)
        os.replace(tmp / "data", out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    manifest = {**manifest, "rows": sum(counts.values()), "rows_per_cutoff": dict(sorted(counts.items()))}
    atomic_write_json(manifest_path(out), manifest)
    return manifest


def read_training_set(path: str | Path) -> pd.DataFrame:
    """A training set written by `write_training_set` as one pandas frame (cutoff back to a timestamp column)."""
    df = pd.read_parquet(path)
    df["cutoff"] = pd.to_datetime(df["cutoff"].astype("string")).astype("datetime64[us]")
    df[MEMBER_ID] = df[MEMBER_ID].astype("string")
    return df
