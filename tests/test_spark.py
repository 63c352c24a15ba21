"""Spark parity (issue 9): the same feature and label definitions on Spark (local mode) give DuckDB's answers.

One local SparkSession for the whole module (local[2], 2 shuffle partitions, UI off), one small synthetic store.
Skipped with a clear reason where pyspark or Java is missing; CI installs `.[dev,spark]`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.spark

AS_OF = "2025-07-01"
CUTOFF = "2024-12-01"


@pytest.fixture(scope="module")
def synth_store(tmp_path_factory: pytest.TempPathFactory):
    from features.store import Store
    from features.synthetic import generate_to_store

    path = tmp_path_factory.mktemp("spark_store") / "store"
    generate_to_store(300, 11, path, workers=1)
    return Store(path)


def assert_frames_equal(a: pd.DataFrame, b: pd.DataFrame, keys: list[str]) -> None:
    """Same columns, same rows (by key), numeric columns equal within 1e-9 relative, others exactly; nulls alike."""
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b) and len(a) > 0
    a = a.sort_values(keys, ignore_index=True)
    b = b.sort_values(keys, ignore_index=True)
    for c in a.columns:
        x, y = a[c], b[c]
        if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(x):
            xa, ya = x.astype("float64").to_numpy(), y.astype("float64").to_numpy()
            assert np.array_equal(np.isnan(xa), np.isnan(ya)), f"{c}: null patterns differ"
            np.testing.assert_allclose(xa, ya, rtol=1e-9, atol=1e-9, equal_nan=True, err_msg=c)
        elif pd.api.types.is_datetime64_any_dtype(x):
            xs = pd.to_datetime(x).astype("datetime64[us]")
            ys = pd.to_datetime(y).astype("datetime64[us]")
            assert xs.equals(ys), c
        else:
            xs = x.astype("string").fillna("<NA>").tolist()
            ys = y.astype("string").fillna("<NA>").tolist()
            assert xs == ys, f"{c}: values differ"


@pytest.fixture(scope="module")
def spark_features(spark, synth_store) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(DuckDB features, Spark features) of the synthetic store at AS_OF, computed once for the module."""
    from features.engine import SparkEngine
    from features.pipeline import compute_features

    return compute_features(synth_store, AS_OF), compute_features(synth_store, AS_OF, engine=SparkEngine(spark))


def test_features_equal_duckdb(spark_features) -> None:
    duck, sp = spark_features
    assert len(duck) > 200
    assert duck.shape[1] > 60  # every family ran (orders, engagement, members, loyalty)
    assert_frames_equal(duck, sp, ["member_id"])
    assert sp.attrs["definitions"] == duck.attrs["definitions"]


def test_labels_and_items_equal_duckdb(spark, synth_store) -> None:
    from features.engine import SparkEngine
    from features.labels import compute_labels, items_bought
    from features.pipeline import compute_recent_items

    eng = SparkEngine(spark)
    duck = compute_labels(synth_store, CUTOFF)
    sp = compute_labels(synth_store, CUTOFF, engine=eng)
    assert duck["churn"].between(0, 1).all() and 0 < duck["churn"].mean() < 1  # a real mix, not a constant
    assert_frames_equal(duck, sp, ["member_id"])
    assert_frames_equal(items_bought(synth_store, CUTOFF, 30), items_bought(synth_store, CUTOFF, 30, engine=eng),
                        ["member_id", "item_id"])
    recent = compute_recent_items(synth_store, AS_OF)
    # the recommender's history with the item events (views / carts / favourites, rows for items only seen)
    assert (recent["n_view"] > 0).any() and (recent["n_cart_hl1"] > 0).any() and (recent["n_bought"] == 0).any()
    assert_frames_equal(recent, compute_recent_items(synth_store, AS_OF, engine=eng), ["member_id", "item_id"])


def test_parity_check_detects_a_difference(spark_features) -> None:
    """The comparison used above is not vacuous: a tiny change, a dropped row or a null are all caught."""
    duck, sp = spark_features
    bumped = sp.copy()
    col = "recency_days"
    i = int(bumped[col].notna().to_numpy().argmax())
    bumped.loc[i, col] = bumped.loc[i, col] + 1e-6
    for broken in (bumped, sp.iloc[1:], sp.assign(top_category=pd.NA)):
        with pytest.raises(AssertionError):
            assert_frames_equal(duck, broken, ["member_id"])


def test_make_engine_spark_names_the_session_requirement() -> None:
    from features.engine import make_engine

    with pytest.raises(ValueError, match="SparkSession"):
        make_engine("spark")


def test_spark_session_settings(spark) -> None:
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert spark.conf.get("spark.sql.shuffle.partitions") == "2"
    assert Path(spark.sparkContext.pythonExec or "python").name.startswith("python")

