"""Batch scoring on Apache Spark (issue 9): the same feature definitions, loyalty rules and champion models as
`serving.batch.score_store`, for stores that outgrow one machine.

`spark_score_store(spark, store, as_of, out, models)` writes `out/scores/` (Parquet, partitioned by
`value_segment` by default), `out/replenishment.parquet/` (the reminder pairs, Parquet part files: the local batch's
`replenishment.parquet` columns, read the same way) and `out/manifest.json`. The stages:

1. **Features and loyalty ledger**: `features.spark_features.spark_features`: the feature plan of
   features/definitions (the DuckDB SQL, transpiled by sqlglot) into a Spark DataFrame, never collected, and
   `loyalty.batch.member_state` (pandas) grouped by member bucket, joined as `compute_features_and_loyalty` joins it.
2. **Churn and LTV**: `mlflow.pyfunc.spark_udf(models:/<name>/<version>, env_manager="local")` over the features
   (row-wise: MLflow's pandas UDF, the model loaded once per Python worker).
3. **Recommendations**: the recs pyfunc needs all of a member's recent items at once (and the popularity fallback for
   members with none): `groupBy(bucket).applyInPandas` calling `serving.compose.recommend_frame` + `recs_columns`.
4. **Composition**: `mapInPandas` turns the raw model outputs into the score columns with `serving.compose`
   (`churn_columns`, `ltv_columns`, `timing_columns`: the functions behind /score and the local batch). The timing
   model runs here rather than in a spark_udf: it needs the as-of date, its logged signature has no params schema
   and `spark_udf` drops every column outside the signature, so the date would never reach it.
5. **Replenishment reminders** (`_replenishment_frames`): the timing champion's estimator in its parts, as the
   local batch runs it over its buckets: member × category cycles per member bucket (`applyInPandas`), their
   per-category counts summed by Spark and turned into the store's category medians on the driver (the model's
   own functions), then the reminders finished per bucket and each member's soonest one (`serving.batch.due_summary`)
   joined onto the scores. Equal to the local batch's reminders (tested), whatever the number of buckets.
6. **Write**: Spark writes the scores into a temporary folder beside `out`; the manifest is added and only then the
   folder is renamed to `out` (`serving.batch.replace_dir`): an interrupted run leaves no partial output. (On an object
   store, where rename is not atomic, point `out` at HDFS/NFS or use a table format's commit instead.)

Models run in the executors' Python workers: the recs and timing models are shipped with MLflow's own
`SparkModelCache` (the mechanism `spark_udf` uses: the model folder zipped and added to the Spark context, loaded
once per worker process). The scores and reminders are those of `score_store` on the same store
(tests/test_spark_batch.py); `MISSING_COLUMNS` (empty) would name any score column this engine does not produce, and
a timing champion logged before the estimator came in parts (no `replenishment_pairs`) leaves the due columns out,
listed in the manifest's `missing_columns`.

The activity columns (`active_hour`, `active_actions`, `profile_completed`) come from the local batch's own query,
`serving.batch.activity_sql`, transpiled by sqlglot and run over the engine's conformed `orders`/`events` views, then
left-joined onto the scores with the local batch's fill rules (no recent action: 0 actions, no hour; no
profile_completed event: False, or unknown when the store has no events table).
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from features.contract import MEMBER_ID
from features.spark_features import BUCKET, LOYALTY_TYPES, pandas_dtypes, spark_features
from features.store import Store
from serving.batch import FEATURE_COLUMNS, MANIFEST, BatchError, replace_dir, splits_replenishment
from serving.compose import RECS_LISTS, churn_columns, ltv_columns, recs_columns, recommend_frame, timing_columns
from serving.models import ModelSet

SCORES_DIR = "scores"
#: score columns of the local batch that the Spark engine does not produce (none since the replenishment reminders
#: run here too; kept so the manifest and the parity test name any future gap)
MISSING_COLUMNS: tuple[str, ...] = ()
#: Spark types of the replenishment estimator's frames (`member_pyfunc.replenishment`: PAIR_COLUMNS, CYCLE_COLUMNS)
PAIR_TYPES: dict[str, str] = {
    "member_id": "string", "category": "string", "n_purchases": "bigint", "first_purchase_at": "timestamp_ntz",
    "last_purchase_at": "timestamp_ntz", "cycle_days": "double", "spread_days": "double", "cycle_cv": "double",
    "is_regular": "boolean", "n_gaps": "bigint",
}
CYCLE_TYPES: dict[str, str] = {
    **{k: v for k, v in PAIR_TYPES.items() if k not in ("is_regular", "n_gaps")},
    "due_cycle_days": "double", "due_at": "timestamp_ntz", "remind_at": "timestamp_ntz", "days_until_due": "double",
    "is_regular": "boolean", "is_consumable": "boolean", "category_regular": "boolean", "lapsed": "boolean",
    "reminder": "boolean", "as_of": "timestamp_ntz",
}
#: the per-member soonest reminder joined onto the scores (serving.batch.due_summary's columns)
DUE_COLUMNS = ("next_due_category", "next_due_at", "days_until_due", "due_cycle_days")
REPLENISHMENT = "replenishment.parquet"  # a folder of part files here; pandas/pyarrow read it as one table


class _Replay:
    """Stands in for a model whose output was computed upstream (by a spark_udf), so that `serving.compose` turns
    it into score columns exactly as it does for a live model."""

    def __init__(self, output: pd.DataFrame) -> None:
        self.output = output

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return self.output


def _worker_model(archive: str) -> Any:
    """The PythonModel shipped as `archive` (SparkModelCache), loaded once per Python worker process."""
    from mlflow.pyfunc.spark_model_cache import SparkModelCache

    return SparkModelCache.get_or_load(archive)[0].unwrap_python_model()


def _ship_model(spark: Any, name: str, version: str, work: Path) -> str:
    """Download one registry version to `work` and add it to the Spark context; returns the archive handle."""
    import mlflow
    from mlflow.pyfunc.spark_model_cache import SparkModelCache

    local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}",
                                                dst_path=str(work / f"model_{name}"))
    return SparkModelCache.add_local_model(spark, local)


def _recs_frame(spark: Any, eng: Any, tables: frozenset[str], ids: Any, t: pd.Timestamp, archive: str,
                top_n: int, buckets: int) -> Any:
    """Spark DataFrame member_id, rec_items, rec_scores, rec_reasons for every member in `ids` (top `top_n`)."""
    import pyspark.sql.functions as F

    from features.definitions.recent_items import recent_items_plan
    from features.engine import sql_literal_timestamp

    recent = eng.dataframe(recent_items_plan(sql_literal_timestamp(t), tables))
    cols = list(recent.columns)
    dtypes = pandas_dtypes(recent)
    rows = (ids.join(recent.withColumn("_h", F.lit(True)), MEMBER_ID, "left")
            .withColumn(BUCKET, F.expr(f"pmod(xxhash64({MEMBER_ID}), {int(buckets)})")))

    def recs(pdf: pd.DataFrame) -> pd.DataFrame:
        model = _worker_model(archive)
        member_ids = pdf[MEMBER_ID].astype("string").drop_duplicates().tolist()
        hist = pdf.loc[pdf["_h"].fillna(False).astype(bool), cols].reset_index(drop=True).astype(dtypes)
        for c in ("member_id", "item_id", "category"):  # as compute_recent_items types them
            if c in hist.columns:
                hist[c] = hist[c].astype("string")
        ranked = recommend_frame(model, hist, member_ids, top_n, t)
        return recs_columns(ranked, member_ids, top_n)

    return rows.groupBy(BUCKET).applyInPandas(
        recs, f"{MEMBER_ID} string, rec_items array<string>, rec_scores array<double>, rec_reasons array<string>")


def _spark_schema(types: dict[str, str]) -> str:
    return ", ".join(f"`{c}` {t}" for c, t in types.items())


def _typed(pdf: pd.DataFrame, types: dict[str, str]) -> pd.DataFrame:
    """`pdf`'s `types` columns with the dtypes the local batch reads them with (strings, µs timestamps)."""
    out = pdf[list(types)].reset_index(drop=True)
    for c, t in types.items():
        if t == "string":
            out[c] = out[c].astype("string")
        elif t == "timestamp_ntz":
            out[c] = pd.to_datetime(out[c]).astype("datetime64[us]")
    return out


def _replenishment_frames(spark: Any, store: Store, t: pd.Timestamp, model: Any, archive: str,
                          buckets: int) -> tuple[Any, Any]:
    """The timing champion's replenishment reminders on Spark, exactly as `serving.batch` computes them:
    (reminder pairs with `CYCLE_TYPES` columns, per-member soonest due with member_id + `DUE_COLUMNS`).

    1. per member bucket (`applyInPandas`): the model's member-local cycles (`replenishment_pairs`) from the raw
       order lines, as the local batch reads its bucket's; materialized once (`localCheckpoint`);
    2. their per-category counts (`groupBy().count()`: small, collected) → the store's category stats on the driver
       with the model's own `replenishment_categories`;
    3. per member bucket again: `replenishment_finish` with those stats, the reminders kept, and the member's
       soonest one marked by `serving.batch.due_summary` (the function the local batch uses)."""
    import pyspark.sql.functions as F

    from serving.batch import due_summary

    items = store.read_optional("items")
    raw = spark.read.parquet(str(store.table_path("orders")))
    cols = [c for c in (MEMBER_ID, "ordered_at", "category", "item_id", "status") if c in raw.columns]
    lines = (raw.select(*cols)
             .where(F.expr(f"ordered_at < TIMESTAMP '{t.isoformat(sep=' ')}'") & F.col(MEMBER_ID).isNotNull())
             .withColumn(BUCKET, F.expr(f"pmod(xxhash64({MEMBER_ID}), {int(buckets)})")))
    order_types = {c: ("timestamp_ntz" if c == "ordered_at" else "string") for c in cols}

    def pairs_of(pdf: pd.DataFrame) -> pd.DataFrame:
        m = _worker_model(archive)
        return _typed(m.replenishment_pairs(_typed(pdf, order_types), t, items=items), PAIR_TYPES)

    pairs = lines.groupBy(BUCKET).applyInPandas(pairs_of, _spark_schema(PAIR_TYPES)).localCheckpoint(eager=True)
    counts = (pairs.groupBy("category", "cycle_days", "is_regular").agg(F.count(F.lit(1)).alias("pairs"))
              .toPandas())
    categories = model.replenishment_categories(counts)

    def finish(pdf: pd.DataFrame) -> pd.DataFrame:
        m = _worker_model(archive)
        cycles = m.replenishment_finish(_typed(pdf, PAIR_TYPES), categories, t, items=items)
        rem = _typed(cycles[cycles["reminder"].astype(bool)], CYCLE_TYPES)
        due = due_summary(rem)
        key = rem[MEMBER_ID].astype(str) + "\x00" + rem["category"].astype(str)
        nxt = set(due[MEMBER_ID].astype(str) + "\x00" + due["next_due_category"].astype(str))
        for c in ("is_regular", "is_consumable", "category_regular"):  # nullable booleans → object with None
            rem[c] = rem[c].astype(object).where(rem[c].notna(), None)
        return rem.assign(_next=key.isin(nxt).to_numpy())

    rem = (pairs.withColumn(BUCKET, F.expr(f"pmod(xxhash64({MEMBER_ID}), {int(buckets)})"))
           .groupBy(BUCKET).applyInPandas(finish, _spark_schema(CYCLE_TYPES) + ", _next boolean")
           .localCheckpoint(eager=True))
    pairs.unpersist()
    due = rem.where(F.col("_next")).select(MEMBER_ID, F.col("category").alias("next_due_category"),
                                            F.col("due_at").alias("next_due_at"), "days_until_due", "due_cycle_days")
    return rem.drop("_next"), due


def _model_inputs(name: str, version: str) -> list[str]:
    import mlflow

    sig = mlflow.models.get_model_info(f"models:/{name}/{version}").signature
    if sig is None or not sig.inputs.has_input_names():
        raise BatchError(f"model {name} version {version} has no named input signature: spark_udf needs one")
    return list(sig.inputs.input_names())


def _udf_struct(spark: Any, name: str, version: str, result_type: str, available: list[str]) -> tuple[Any, Any]:
    """(the spark_udf of one registry version, the struct of its input columns)."""
    import mlflow
    import pyspark.sql.functions as F

    inputs = _model_inputs(name, version)
    missing = [c for c in inputs if c not in available]
    if missing:
        raise BatchError(f"model {name} version {version} needs feature(s) {missing} the store does not give")
    udf = mlflow.pyfunc.spark_udf(spark, f"models:/{name}/{version}", result_type=result_type, env_manager="local")
    return udf, F.struct(*[F.col(f"`{c}`") for c in inputs])


def spark_score_store(spark: Any, store: Store, as_of: object, out: Path, models: ModelSet, *, top_n: int = 10,
                      top_reasons: int = 3, chunk_size: int = 50_000,
                      partition_by: tuple[str, ...] = ("value_segment",)) -> dict[str, Any]:
    """Score every member of `store` as of `as_of` on `spark` into the folder `out` (replaced atomically); returns
    the manifest (also `out/manifest.json`). `models` gives the exact versions (loaded by `load_models`);
    `chunk_size` members share one pandas call in the grouped stages (loyalty, recommendations)."""
    import pyspark.sql.functions as F

    from features.engine import as_timestamp
    from features.pipeline import FEATURE_VERSION, categorical_features
    from features.training_set import source_fingerprint

    if not 1 <= top_n <= 100:
        raise BatchError(f"top_n must be in 1..100, got {top_n}")
    if chunk_size < 1:
        raise BatchError(f"chunk_size must be ≥ 1, got {chunk_size}")
    if not models.loaded:
        raise BatchError("no model is loaded: " + "; ".join(f"{k}: {v}" for k, v in models.unavailable.items()))
    bad = [c for c in partition_by if c not in LOYALTY_TYPES or LOYALTY_TYPES[c] != "string"]
    if bad:
        raise BatchError(f"partition_by: {bad} not usable; choose string loyalty columns such as value_segment, "
                         "lifecycle_segment, tier")
    t = as_timestamp(as_of, "as_of")
    store.check()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    work = Path(tempfile.mkdtemp(prefix="member-ml-spark-batch-"))
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    try:
        t0 = time.perf_counter()
        sf = spark_features(spark, store, t, chunk_size=chunk_size)
        if sf.members == 0:
            raise BatchError(f"store {store.path} has no member with any row before {t.date()}")
        if sf.state is None:  # no loyalty package: no segment columns to partition by
            partition_by = ()
        available = list(sf.frame.columns)
        frame = sf.frame
        if sf.state is not None:  # the state's own columns beside the features, prefixed (some names are features)
            frame = frame.join(sf.state.select(MEMBER_ID, *[F.col(f"`{c}`").alias(f"_s_{c}") for c in LOYALTY_TYPES]),
                               MEMBER_ID, "left")
        seconds["features"] = time.perf_counter() - t0

        t1 = time.perf_counter()
        raw = []
        if (m := models.get("churn")) is not None:
            reasons = [c for c in _model_outputs("churn", m.version) if c.startswith("reason_")]
            udf, args = _udf_struct(spark, "churn", m.version, ", ".join(
                ["member_id string", "churn_probability double", *[f"`{c}` string" for c in reasons]]), available)
            frame = frame.withColumn("_churn", udf(args))
            raw.append("_churn")
        if (m := models.get("ltv")) is not None:
            udf, args = _udf_struct(spark, "ltv", m.version, "member_id string, ltv double", available)
            frame = frame.withColumn("_ltv", udf(args))
            raw.append("_ltv")
        flat = [F.col(f"`{c}`") for c in frame.columns if c not in raw]
        for s in raw:
            flat += [F.col(f"{s}.`{f.name}`").alias(f"{s}__{f.name}") for f in frame.schema[s].dataType.fields]
        frame = frame.select(*flat)

        timing_archive = None
        probs: list[str] = []
        if (m := models.get("timing")) is not None:
            timing_archive = _ship_model(spark, "timing", m.version, work)
            probs = [c for c in _model_outputs("timing", m.version) if c.startswith("p_")]
        schema = _scores_schema(frame.schema, sf.state is not None, models, probs)
        compose = _composer(t, top_reasons, timing_archive, categorical_features(sf.tables), available,
                            [f.name for f in schema.fields])
        scores = frame.mapInPandas(compose, schema)
        if (m := models.get("recs")) is not None:
            archive = _ship_model(spark, "recs", m.version, work)
            recs = _recs_frame(spark, sf.engine, sf.tables, sf.frame.select(MEMBER_ID), t, archive, top_n,
                               sf.buckets)
            scores = scores.join(recs, MEMBER_ID, "left")
            for c, typ in (("rec_items", "array<string>"), ("rec_scores", "array<double>"),
                           ("rec_reasons", "array<string>")):
                scores = scores.withColumn(c, F.coalesce(F.col(c), F.expr(f"CAST(array() AS {typ})")))
        scores = _with_activity(spark, scores, sf.tables, t)
        reminders = None
        if timing_archive is not None and splits_replenishment(models.get("timing").python_model):
            reminders, due = _replenishment_frames(spark, store, t, models.get("timing").python_model,
                                                   timing_archive, sf.buckets)
            scores = scores.join(due, MEMBER_ID, "left")
            missing = list(MISSING_COLUMNS)
        elif timing_archive is not None:  # a timing model logged before the estimator came in parts
            missing = list(DUE_COLUMNS)
        else:
            missing = list(MISSING_COLUMNS)
        seconds["models"] = time.perf_counter() - t1  # lazy until written: the write below runs the models

        t2 = time.perf_counter()
        old = spark.conf.get("spark.sql.parquet.outputTimestampType", None)
        spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        try:
            writer = scores.write.mode("errorifexists")
            if partition_by:
                writer = writer.partitionBy(*partition_by)
            writer.parquet(str(tmp / SCORES_DIR))
            if reminders is not None:
                reminders.write.mode("errorifexists").parquet(str(tmp / REPLENISHMENT))
        finally:
            if old is not None:
                spark.conf.set("spark.sql.parquet.outputTimestampType", old)
        members = spark.read.parquet(str(tmp / SCORES_DIR)).count()
        n_pairs = spark.read.parquet(str(tmp / REPLENISHMENT)).count() if reminders is not None else None
        seconds["write_and_models"] = time.perf_counter() - t2
        total = time.perf_counter() - started
        manifest = {
            "engine": "spark", "spark_master": spark.sparkContext.master, "spark_version": spark.version,
            "as_of": t.isoformat(), "members": int(members),
            "replenishment_pairs": None if n_pairs is None else int(n_pairs),
            "format": "parquet",
            "files": {"scores": SCORES_DIR, "replenishment": REPLENISHMENT if reminders is not None else None},
            "partition_by": list(partition_by), "missing_columns": missing,
            "models": {k: {"version": v.version, "run_id": v.run_id} for k, v in models.loaded.items()},
            "unavailable_models": dict(models.unavailable), "top_n": top_n, "chunk_size": chunk_size,
            "buckets": sf.buckets, "feature_version": FEATURE_VERSION, "source": source_fingerprint(store),
            "seconds": {"total": round(total, 3), **{k: round(v, 3) for k, v in seconds.items()}},
            "members_per_second": round(members / total, 1) if total > 0 else None,
            "written_at": pd.Timestamp.now("UTC").isoformat(),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
        replace_dir(tmp, out)
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _model_outputs(name: str, version: str) -> list[str]:
    import mlflow

    sig = mlflow.models.get_model_info(f"models:/{name}/{version}").signature
    if sig is None or sig.outputs is None or not sig.outputs.has_input_names():
        raise BatchError(f"model {name} version {version} has no named output signature")
    return list(sig.outputs.input_names())


def _scores_schema(feats_schema: Any, with_state: bool, models: ModelSet, probs: list[str]) -> Any:
    """The Spark schema of the composed score rows (the local batch's columns, in its order, minus recs)."""
    from pyspark.sql.types import StructField, StructType, _parse_datatype_string

    def field(name: str, typ: str) -> StructField:
        return StructField(name, _parse_datatype_string(typ), True)

    fields = [field(MEMBER_ID, "string"), field("as_of", "timestamp_ntz")]
    if with_state:
        fields += [field(c, typ) for c, typ in LOYALTY_TYPES.items()]
    by_name = {f.name: f for f in feats_schema.fields}
    fields += [StructField(c, by_name[c].dataType, True) for c in FEATURE_COLUMNS if c in by_name]
    if models.get("churn") is not None:
        fields += [field("churn_probability", "double"), field("churn_reasons", "array<string>")]
    if models.get("ltv") is not None:
        fields += [field("ltv", "double")]
    if models.get("churn") is not None and models.get("ltv") is not None:
        fields += [field("value_at_risk", "double")]
    if models.get("timing") is not None:
        fields += [field(p, "double") for p in probs]
        fields += [field("median_days", "double"), field("expected_days", "double"),
                   field("next_purchase_date", "timestamp_ntz")]
    return StructType(fields)


def _composer(t: pd.Timestamp, top_reasons: int, timing_archive: str | None, categorical: list[str],
              feature_cols: list[str], out_cols: list[str]):  # noqa: ANN202 - the mapInPandas function
    """The mapInPandas function: raw model outputs + loyalty state + features → score rows, via serving.compose."""

    def compose(batches):  # noqa: ANN001, ANN202 - iterator of pandas frames in, iterator out
        timing = _worker_model(timing_archive) if timing_archive else None
        for pdf in batches:
            pdf = pdf.reset_index(drop=True)
            feats = pdf[feature_cols].copy()
            feats[MEMBER_ID] = feats[MEMBER_ID].astype("string")
            for c in categorical:
                if c in feats.columns:
                    feats[c] = feats[c].astype("string")
            out = pd.DataFrame({MEMBER_ID: feats[MEMBER_ID].to_numpy(),
                                "as_of": pd.Series(t, index=pdf.index).astype("datetime64[us]").to_numpy()})
            for c in LOYALTY_TYPES:
                if f"_s_{c}" in pdf.columns:
                    out[c] = pdf[f"_s_{c}"].to_numpy()
            for c in FEATURE_COLUMNS:
                if c in feats.columns:
                    out[c] = feats[c].to_numpy()
            if "_churn__churn_probability" in pdf.columns:
                raw = _unprefix(pdf, "_churn__")
                out = _merge(out, churn_columns(_Replay(raw), feats, top_reasons))
            if "_ltv__ltv" in pdf.columns:
                out = _merge(out, ltv_columns(_Replay(_unprefix(pdf, "_ltv__")), feats))
            if "churn_probability" in out.columns and "ltv" in out.columns:
                out["value_at_risk"] = out["churn_probability"] * out["ltv"]
            if timing is not None:
                out = _merge(out, timing_columns(timing, feats, t))
            yield out[out_cols]

    return compose


def _with_activity(spark: Any, scores: Any, tables: frozenset[str], t: pd.Timestamp) -> Any:
    """`scores` with the activity columns of the local batch: `serving.batch.activity_sql` (the one definition)
    transpiled to Spark over the conformed `orders`/`events` views the feature engine registered, left-joined by
    member with the local batch's fill rules (`score_chunk`)."""
    import pyspark.sql.functions as F

    from features.engine import to_dialect
    from serving.batch import activity_sql

    has_events = "events" in tables
    act = spark.sql(to_dialect(activity_sql("orders", "events" if has_events else None, t), "spark"))
    scores = scores.join(act.select(MEMBER_ID, "active_hour", "active_actions",
                                    *(["profile_completed"] if has_events else [])), MEMBER_ID, "left")
    scores = scores.withColumn("active_hour", F.col("active_hour").cast("double"))
    scores = scores.withColumn("active_actions", F.coalesce(F.col("active_actions").cast("double"), F.lit(0.0)))
    # absent from `act`: no profile_completed event, a known "no"; without an events table, unknown (as locally)
    return scores.withColumn("profile_completed", F.coalesce(F.col("profile_completed"), F.lit(False))
                             if has_events else F.lit(None).cast("boolean"))


def _unprefix(pdf: pd.DataFrame, prefix: str) -> pd.DataFrame:
    cols = [c for c in pdf.columns if c.startswith(prefix)]
    return pdf[cols].rename(columns=lambda c: c.removeprefix(prefix)).reset_index(drop=True)


def _merge(left: pd.DataFrame, right: pd.DataFrame) -> pd.DataFrame:
    """Add `right`'s columns by member_id (row order of `left`)."""
    r = right.drop_duplicates(MEMBER_ID).set_index(MEMBER_ID)
    r.index = r.index.astype("string")
    return left.join(r, on=MEMBER_ID)


def read_spark_scores(folder: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A scores folder written by `spark_score_store`: (the scores with partition columns as strings and list
    columns as lists, the manifest)."""
    folder = Path(folder)
    mpath = folder / MANIFEST
    if not mpath.exists():
        raise BatchError(f"{folder} is not a scores folder (no {MANIFEST})")
    manifest = json.loads(mpath.read_text(encoding="utf-8"))
    df = pd.read_parquet(folder / manifest["files"]["scores"])
    for c in manifest.get("partition_by", []):
        df[c] = df[c].astype("string").replace("__HIVE_DEFAULT_PARTITION__", pd.NA)
    for c in RECS_LISTS + ("churn_reasons",):
        if c in df.columns:
            df[c] = [list(v) if v is not None else [] for v in df[c]]
    df[MEMBER_ID] = df[MEMBER_ID].astype("string")
    return df, manifest
