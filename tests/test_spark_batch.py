"""Batch scoring and training sets on Spark (issue 9), local mode: the champion models score a Spark DataFrame of
features (spark_udf for churn/LTV; grouped pandas for recommendations, loyalty and the composition through
serving.compose; the activity columns from serving.batch.activity_sql transpiled to Spark) and give exactly the local
`score_store` output on the same trained store; the Spark run goes through
`member-ml score --engine spark`. Also: `member-ml features --engine spark` and a stacked training set built on Spark
equal DuckDB's, a failed run leaves the previous output alone, and `campaign build` reads the Spark scores.

One small trained store (tests/fixtures_batch.py, 300 members) and one local SparkSession (local[2], 2 shuffle
partitions) for the module. Skipped with a clear reason where pyspark or Java is missing; CI installs `.[dev,spark]`.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.store import Store
from tests.fixtures_batch import AS_OF, MODELS, trained_champions
from tests.test_spark import assert_frames_equal

pytestmark = [pytest.mark.spark, pytest.mark.timeout(900)]

LISTS = ("churn_reasons", "rec_items", "rec_reasons")


@pytest.fixture(scope="module")
def scored(spark, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The trained store, its local batch scores (score_store) and its Spark scores (`member-ml score --engine
    spark`, 3 member buckets)."""
    from member_ml.cli import app
    from serving.batch import score_store

    folder = tmp_path_factory.mktemp("spark_batch")
    with trained_champions(folder) as (env, models):
        score_store(Store(env["store"]), AS_OF, folder / "local", models, workers=1)
        res = CliRunner().invoke(app, ["score", "--store", env["store"], "--as-of", AS_OF, "--out",
                                       str(folder / "spark"), "--engine", "spark", "--chunk-size", "120"])
        assert res.exit_code == 0, res.output
        yield {**env, "folder": folder, "models": models, "local": folder / "local", "spark": folder / "spark",
               "output": res.output}


def _equal_columns(a: pd.Series, b: pd.Series, name: str) -> None:
    if name in LISTS:
        assert [list(x) for x in a] == [list(y) for y in b], name
    elif name == "rec_scores":
        assert [len(x) for x in a] == [len(y) for y in b], name
        np.testing.assert_allclose(np.concatenate([np.asarray(x, float) for x in a] or [[]]),
                                   np.concatenate([np.asarray(y, float) for y in b] or [[]]), rtol=1e-9, err_msg=name)
    elif pd.api.types.is_numeric_dtype(b) and not pd.api.types.is_bool_dtype(b):
        np.testing.assert_allclose(a.astype("float64").to_numpy(), b.astype("float64").to_numpy(), rtol=1e-9,
                                   atol=1e-12, equal_nan=True, err_msg=name)
    elif pd.api.types.is_datetime64_any_dtype(b):
        assert pd.to_datetime(a).astype("datetime64[us]").equals(pd.to_datetime(b).astype("datetime64[us]")), name
    else:
        assert a.astype("string").fillna("<NA>").tolist() == b.astype("string").fillna("<NA>").tolist(), name


def test_spark_scores_equal_local_batch(scored: dict) -> None:
    from serving.batch import read_scores
    from serving.spark_batch import MISSING_COLUMNS, read_spark_scores

    sp, manifest = read_spark_scores(scored["spark"])
    lo, _ = read_scores(scored["local"])
    assert len(sp) == len(lo) > 200 and sp["member_id"].is_unique
    assert set(sp["member_id"]) == set(lo["member_id"])
    # every local column is produced on Spark except the documented ones, and nothing else
    assert set(lo.columns) - set(sp.columns) == set(MISSING_COLUMNS) == set(manifest["missing_columns"])
    assert set(sp.columns) <= set(lo.columns)
    sp = sp.set_index("member_id").sort_index()
    lo = lo.set_index("member_id").sort_index()
    for c in sp.columns:
        _equal_columns(sp[c], lo[c], c)
    # a real mix, not constants: the comparison above had something to compare
    assert sp["churn_probability"].nunique() > 50 and sp["ltv"].nunique() > 50 and sp["p_30"].nunique() > 50
    assert (sp["rec_items"].map(len) == 10).all() and sp["tier"].nunique() > 1
    assert sp["next_purchase_date"].notna().all()
    # the activity columns (serving.batch.activity_sql transpiled to Spark) were compared above, and are real
    assert {"active_hour", "active_actions", "profile_completed"} <= set(sp.columns)
    assert sp["active_hour"].nunique() > 3 and (sp["active_actions"] > 0).sum() > 100
    assert sp["profile_completed"].astype("boolean").notna().all()
    assert 0 < sp["profile_completed"].astype(bool).sum() < len(sp)
    # the replenishment columns (soonest reminder per member) were compared above, and are real
    assert manifest["missing_columns"] == [] and sp["next_due_category"].notna().sum() > 20
    assert sp["due_cycle_days"].nunique() > 10


def test_spark_replenishment_equals_local_batch(scored: dict) -> None:
    """The reminder pairs (member × category) on Spark (3 member buckets, store-wide category stats from summed
    counts) equal the local batch's (one bucket), column for column."""
    from serving.batch import read_replenishment
    from serving.spark_batch import CYCLE_TYPES
    from training.member_pyfunc.replenishment import CYCLE_COLUMNS

    assert tuple(CYCLE_TYPES) == CYCLE_COLUMNS
    sp, lo = read_replenishment(scored["spark"]), read_replenishment(scored["local"])
    manifest = json.loads((scored["spark"] / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["replenishment_pairs"] == len(sp) == len(lo) > 20
    assert list(sp.columns) == list(CYCLE_COLUMNS) and sp["reminder"].all()
    key = ["member_id", "category"]
    sp = sp.astype({k: "string" for k in key}).set_index(key).sort_index()
    lo = lo.astype({k: "string" for k in key}).set_index(key).sort_index()
    assert sp.index.equals(lo.index)
    for c in sp.columns:
        _equal_columns(sp[c], lo[c], c)
    assert sp["due_cycle_days"].nunique() > 10 and sp["category_regular"].notna().any()


def test_local_reminders_do_not_depend_on_the_chunk_size(scored: dict) -> None:
    """The local batch in 3 buckets (a first pass sums each bucket's category counts) gives the one-bucket
    reminders exactly: the category medians are the store's, not the bucket's."""
    from serving.batch import read_replenishment, read_scores, score_store

    out = scored["folder"] / "local_chunked"
    m = score_store(Store(scored["store"]), AS_OF, out, scored["models"], workers=1, chunk_size=120)
    assert m["chunks"] == 3
    a, b = read_replenishment(out), read_replenishment(scored["local"])
    key = ["member_id", "category"]
    pd.testing.assert_frame_equal(a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True))
    sa = read_scores(out)[0].set_index("member_id").sort_index()
    sb = read_scores(scored["local"])[0].set_index("member_id").sort_index()
    for c in ("next_due_category", "next_due_at", "days_until_due", "due_cycle_days"):
        _equal_columns(sa[c], sb[c], c)


def test_parity_comparison_catches_a_difference(scored: dict) -> None:
    from serving.spark_batch import read_spark_scores

    sp, _ = read_spark_scores(scored["spark"])
    bumped = sp["churn_probability"].copy()
    bumped.iloc[3] += 1e-6
    with pytest.raises(AssertionError):
        _equal_columns(bumped, sp["churn_probability"], "churn_probability")
    recs = sp["rec_items"].copy()
    recs.iloc[0] = list(reversed(recs.iloc[0]))
    with pytest.raises(AssertionError):
        _equal_columns(recs, sp["rec_items"], "rec_items")


def test_manifest_partitions_and_no_leftovers(scored: dict) -> None:
    out = scored["spark"]
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["engine"] == "spark" and manifest["spark_master"].startswith("local")
    assert manifest["as_of"].startswith(AS_OF) and manifest["buckets"] == 3
    assert {k: v["version"] for k, v in manifest["models"].items()} == {m: "1" for m in MODELS}
    parts = sorted(p.name for p in (out / "scores").iterdir() if p.is_dir())
    assert parts and all(p.startswith("value_segment=") for p in parts)
    assert (out / "scores" / "_SUCCESS").exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith((".spark.tmp-", ".spark.old-"))]
    assert "batch scores (spark)" in scored["output"]


def test_failed_run_keeps_previous_output(spark, scored: dict) -> None:
    from serving.batch import BatchError
    from serving.spark_batch import spark_score_store

    out = scored["spark"]
    before = (out / "manifest.json").read_text(encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", scored["tracking_uri"])
        with pytest.raises(BatchError, match="no member"):
            spark_score_store(spark, Store(scored["store"]), "2000-01-01", out, scored["models"])
        with pytest.raises(BatchError, match="partition_by"):
            spark_score_store(spark, Store(scored["store"]), AS_OF, out, scored["models"], partition_by=("ltv",))
    assert (out / "manifest.json").read_text(encoding="utf-8") == before
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".spark.tmp-")]


def test_campaign_build_reads_spark_scores(scored: dict, tmp_path: Path) -> None:
    from member_ml.cli import app

    summaries = {}
    for engine in ("spark", "local"):
        res = CliRunner().invoke(app, ["campaign", "build", "--scores", str(scored[engine]), "--out",
                                       str(tmp_path / engine)])
        assert res.exit_code == 0, res.output
        summaries[engine] = pd.read_parquet(tmp_path / engine / "summary.parquet").set_index("audience")
    # the replenishment audience is built from the Spark reminders too, and equals the local one
    rep = summaries["spark"]["kind"] == "replenishment"
    assert rep.any() and (summaries["spark"].loc[rep, "eligible"] > 0).all()
    assert summaries["spark"]["eligible"].equals(summaries["local"]["eligible"])


def test_features_cli_on_spark_equals_duckdb(spark, scored: dict, tmp_path: Path) -> None:
    from features.pipeline import compute_features
    from features.training_set import manifest_path
    from member_ml.cli import app

    out = tmp_path / "features.parquet"
    res = CliRunner().invoke(app, ["features", "--store", scored["store"], "--as-of", AS_OF, "--out", str(out),
                                   "--engine", "spark"])
    assert res.exit_code == 0, res.output
    duck = compute_features(Store(scored["store"]), AS_OF)
    sp = pd.read_parquet(out)
    manifest = json.loads(manifest_path(out).read_text(encoding="utf-8"))
    assert manifest["engine"] == "spark" and manifest["rows"] == len(duck)
    assert manifest["features"] == [c for c in duck.columns if c != "member_id"]
    assert_frames_equal(duck, sp[list(duck.columns)], ["member_id"])


def test_training_set_on_spark_equals_duckdb(spark, scored: dict, tmp_path: Path) -> None:
    from features.spark_features import (read_training_set, sample_by_churn, spark_training_set,
                                         write_training_set)
    from features.training_set import build_training_set

    store = Store(scored["store"])
    cuts = ["2025-03-01", "2025-05-01"]
    horizons = {"churn_horizon": 60, "ltv_horizon": 90, "timing_horizon": 60}
    duck = build_training_set(store, cuts, **horizons)
    frame, manifest = spark_training_set(spark, store, cuts, **horizons)
    written = write_training_set(frame, manifest, tmp_path / "ts")
    sp = read_training_set(tmp_path / "ts")
    assert written["rows"] == len(duck.frame) and len(written["rows_per_cutoff"]) == 2
    assert manifest["features"] == duck.manifest["features"] and manifest["definitions"] == duck.manifest["definitions"]
    assert_frames_equal(duck.frame, sp[list(duck.frame.columns)], ["member_id", "cutoff"])

    # a stratified sample by churn label: all churners kept, about half the others, weights undo the sampling
    s = sample_by_churn(frame, {0: 0.5, 1: 1.0}, seed=3).toPandas()
    full = duck.frame
    assert (s["churn"] == 1).sum() == (full["churn"] == 1).sum()
    kept = (s["churn"] == 0).sum() / max(1, (full["churn"] == 0).sum())
    assert 0.3 < kept < 0.7
    assert set(s.loc[s["churn"] == 0, "sample_weight"]) == {2.0}
    assert set(s.loc[s["churn"] == 1, "sample_weight"]) == {1.0}
    with pytest.raises(ValueError, match="fractions"):
        sample_by_churn(frame, {0: 0.0})
