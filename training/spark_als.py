"""ALS on Spark MLlib behind the recommendation pyfunc (issue 9, "training at scale").

The recs pyfunc (`training.member_pyfunc.recs`) keeps only *item* factors and folds each member's history in at
prediction time, so it does not care who factorised the matrix. When the member × item matrix outgrows one machine
(`implicit` holds it as one CSR matrix), `spark_item_factors` builds the same confidence matrix on Spark and fits
`pyspark.ml.recommendation.ALS` (implicitPrefs) on it; `with_item_factors` puts the factors into a `RecsArtifacts`
(the one the pyfunc serves), aligned to its item ids.

What is the same as `training.recs.candidates.fit_candidates`:
- the member × item history: the pyfunc's own `summarise_history`, run per member bucket (cogrouped orders and
  events, `applyInPandas`: a member's rows are all in one pandas call), same window and cutoff (rows strictly
  before it);
- the interaction strength and BM25 confidence: the pyfunc's `strength` and `bm25_confidence`, with the store-wide
  idf per item and mean member length computed by Spark aggregates (small: one row per item), so each member's
  confidences equal the one-machine matrix's;
- the item ids: sorted distinct items of the history (so the factors line up with the other item arrays).

What MLlib cannot do like `implicit` (the trade-offs):
- confidence: MLlib uses c = 1 + alpha·r where implicit uses c = r (the values of the matrix); with alpha = 1 and
  r = the BM25 confidence every observed pair weighs one unit more here;
- regularisation: MLlib scales λ by the member's (item's) number of interactions (ALS-WR), implicit uses λ as is;
  the pyfunc's fold-in keeps implicit's form (`als_reg` = λ), so a member's folded-in vector is close to, not
  equal to, MLlib's own user factor;
- iterations are shuffle-heavy (set a checkpoint directory: `spark.sparkContext.setCheckpointDir`, used every
  `checkpoint_interval` iterations) and the solver exposes fewer knobs (no conjugate-gradient, no GPU).
The other candidate arrays (popularity, item neighbours, item statistics) come from `fit_candidates` on one machine:
only the factorisation is distributed here. Quality on a small store: tests/test_spark_als.py.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from features.contract import MEMBER_ID
from features.store import Store

BUCKET = "_bucket"
ORDER_COLUMNS = ("member_id", "order_id", "ordered_at", "item_id", "status", "amount")
EVENT_COLUMNS = ("member_id", "occurred_at", "type", "item_id")


def _params(config: Any) -> dict[str, Any]:
    """The pyfunc's parameters for `strength` / `bm25_confidence` from a `CandidateConfig` (as fit_candidates)."""
    from training.member_pyfunc.recs import DEFAULT_PARAMS

    p = {**DEFAULT_PARAMS, **config.model_dump(include={
        "w_buy", "w_cart", "w_favorite", "w_view", "bm25_k1", "bm25_b", "als_alpha"})}
    p["als_reg"] = config.regularization
    return p


def _select(sdf: Any, cols: tuple[str, ...]) -> Any:
    import pyspark.sql.functions as F

    return sdf.select(*[F.col(c) if c in sdf.columns else F.lit(None).cast("string").alias(c) for c in cols])


def spark_strengths(spark: Any, store: Store, cutoff: object, config: Any, *, buckets: int = 8) -> Any:
    """Spark DataFrame (member_id, item_id, s): the pyfunc's history summary per member × item before `cutoff`
    (window `config.history_days`) and its interaction strength, computed per member bucket."""
    import pyspark.sql.functions as F

    from training.member_pyfunc.recs import strength, summarise_history

    t = pd.Timestamp(cutoff)
    p = _params(config)
    window = config.history_days
    lit = f"TIMESTAMP '{t.isoformat(sep=' ')}'"
    start = "" if window is None else f" AND {{col}} >= {lit} - INTERVAL {int(window)} DAY"
    bucket = F.expr(f"pmod(xxhash64({MEMBER_ID}), {int(buckets)})")
    orders = _select(spark.read.parquet(str(store.table_path("orders"))), ORDER_COLUMNS)
    orders = orders.where(F.expr(f"ordered_at < {lit}" + start.format(col="ordered_at"))).withColumn(BUCKET, bucket)
    if store.has("events"):
        events = _select(spark.read.parquet(str(store.table_path("events"))), EVENT_COLUMNS)
        events = events.where(F.expr(f"occurred_at < {lit}" + start.format(col="occurred_at")))
    else:
        events = spark.createDataFrame([], "member_id string, occurred_at timestamp, type string, item_id string")
    events = events.withColumn(BUCKET, bucket)

    def summary(o: pd.DataFrame, e: pd.DataFrame) -> pd.DataFrame:
        o = o.drop(columns=BUCKET)
        for c in ("member_id", "order_id", "item_id", "status"):
            o[c] = o[c].astype("string")
        e = e.drop(columns=BUCKET)
        for c in ("member_id", "type", "item_id"):
            e[c] = e[c].astype("string")
        h = summarise_history(o, e if len(e) else None, as_of=t, window_days=window)
        s = strength(h["n_bought"].to_numpy(float), h["n_cart"].to_numpy(float), h["n_favorite"].to_numpy(float),
                     h["n_view"].to_numpy(float), p)
        return pd.DataFrame({MEMBER_ID: h[MEMBER_ID].astype(str).to_numpy(object),
                             "item_id": h["item_id"].astype(str).to_numpy(object), "s": s})

    return (orders.groupBy(BUCKET).cogroup(events.groupBy(BUCKET))
            .applyInPandas(summary, "member_id string, item_id string, s double"))


@dataclasses.dataclass
class SparkFactors:
    """Item factors fitted by MLlib, in the pyfunc's item order."""

    item_ids: np.ndarray  #: (n,) str, sorted: the distinct items of the history
    item_factors: np.ndarray  #: (n, factors) float32 (zeros for an item MLlib gave no factor)
    item_idf: np.ndarray  #: (n,) float32: the BM25 idf the confidences used
    params: dict[str, Any]  #: strength/BM25 parameters with the store's avg_len, als_reg, engine notes
    members: int
    interactions: int


def spark_item_factors(spark: Any, store: Store, cutoff: object, config: Any, *, buckets: int = 8,
                       checkpoint_interval: int = 10) -> SparkFactors:
    """Fit MLlib ALS (implicitPrefs, rank/iterations/λ/seed of `config`, a `CandidateConfig`) on the BM25
    confidence matrix of the store's history before `cutoff`; returns the item factors in the pyfunc's order."""
    import pyspark.sql.functions as F
    from pyspark.ml.recommendation import ALS

    from training.member_pyfunc.recs import bm25_confidence

    p = _params(config)
    strengths = spark_strengths(spark, store, cutoff, config, buckets=buckets).localCheckpoint(eager=True)
    n_members = strengths.select(MEMBER_ID).distinct().count()
    if n_members == 0:
        raise ValueError(f"no order lines or item events before cutoff {pd.Timestamp(cutoff)}: nothing to factorise")
    per_item = (strengths.groupBy("item_id").agg(F.sum((F.col("s") > 0).cast("double")).alias("df"))
                .toPandas())
    item_ids = np.sort(per_item["item_id"].astype(str).to_numpy())
    item_index = pd.Index(item_ids)
    df = per_item.set_index(per_item["item_id"].astype(str))["df"].reindex(item_index).to_numpy(float)
    idf = np.maximum(np.log(n_members) - np.log1p(df), 0.05).astype(np.float32)  # as fit_candidates
    p["avg_len"] = float(strengths.agg(F.sum("s")).first()[0]) / n_members
    uid = (strengths.select(MEMBER_ID).distinct().rdd.zipWithIndex()
           .map(lambda r: (r[0][0], int(r[1]))).toDF(f"{MEMBER_ID} string, uid int"))

    def confidence(pdf: pd.DataFrame) -> pd.DataFrame:
        m = pd.factorize(pdf[MEMBER_ID])[0].astype(np.int64)
        i = item_index.get_indexer(pdf["item_id"].astype(str)).astype(np.int64)
        c = bm25_confidence(pdf["s"].to_numpy(float), m, i, int(m.max()) + 1 if len(m) else 0, idf, p)
        c = c.astype(np.float32).astype(np.float64)  # the float32 matrix implicit is given
        keep = c > 0  # as eliminate_zeros
        return pd.DataFrame({MEMBER_ID: pdf[MEMBER_ID].to_numpy(object)[keep], "iid": i[keep].astype(np.int32),
                             "conf": c[keep]})

    ratings = (strengths.withColumn(BUCKET, F.expr(f"pmod(xxhash64({MEMBER_ID}), {int(buckets)})"))
               .groupBy(BUCKET).applyInPandas(confidence, f"{MEMBER_ID} string, iid int, conf double")
               .join(uid, MEMBER_ID).select("uid", "iid", "conf").localCheckpoint(eager=True))
    interactions = ratings.count()
    als = ALS(rank=config.factors, maxIter=config.iterations, regParam=config.regularization, implicitPrefs=True,
              alpha=1.0, userCol="uid", itemCol="iid", ratingCol="conf", seed=config.seed, nonnegative=False,
              checkpointInterval=checkpoint_interval, coldStartStrategy="drop")
    model = als.fit(ratings)
    got = model.itemFactors.toPandas()
    factors = np.zeros((len(item_ids), config.factors), np.float32)
    if len(got):
        factors[got["id"].to_numpy(np.int64)] = np.stack(got["features"].to_numpy()).astype(np.float32)
    p.update({"als_engine": "spark-mllib", "als_mllib_confidence": "1 + alpha * r (alpha 1, r = BM25 confidence)",
              "als_mllib_regularization": "λ × interactions per member/item (ALS-WR)",
              "als_iterations": config.iterations, "factors": config.factors})
    for df_ in (strengths, ratings):
        df_.unpersist()
    return SparkFactors(item_ids=item_ids.astype(str), item_factors=factors, item_idf=idf, params=p,
                        members=int(n_members), interactions=int(interactions))


def with_item_factors(art: Any, fitted: SparkFactors) -> Any:
    """A copy of the pyfunc's `RecsArtifacts` with MLlib's item factors (and the idf/avg_len the confidences used),
    aligned to `art.item_ids`; an item of `art` MLlib never saw gets a zero vector (no collaborative signal)."""
    pos = pd.Index(fitted.item_ids).get_indexer(pd.Index(art.item_ids.astype(str)))
    factors = np.zeros((len(art.item_ids), fitted.item_factors.shape[1]), np.float32)
    idf = np.full(len(art.item_ids), 0.05, np.float32)
    ok = pos >= 0
    factors[ok] = fitted.item_factors[pos[ok]]
    idf[ok] = fitted.item_idf[pos[ok]]
    params = {**art.params, **{k: v for k, v in fitted.params.items() if k in (
        "avg_len", "als_reg", "als_engine", "als_mllib_confidence", "als_mllib_regularization", "als_iterations",
        "factors")}}
    return dataclasses.replace(art, item_factors=factors, item_idf=idf, params=params)
