"""Training sets (stacked cutoffs + manifest), monthly cutoffs and the temporal split."""
from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.labels import LABEL_COLUMNS, compute_labels
from features.pipeline import FEATURE_VERSION, compute_features
from features.training_set import TrainingSet, build_training_set, monthly_cutoffs, temporal_split
from tests.fixtures_features import make_tables, write_store


def test_monthly_cutoffs() -> None:
    assert monthly_cutoffs("2022-01-15", "2022-04-01") == [pd.Timestamp(d) for d in
                                                          ("2022-02-01", "2022-03-01", "2022-04-01")]
    assert monthly_cutoffs("2022-01-01", "2022-01-01") == [pd.Timestamp("2022-01-01")]
    with pytest.raises(ValueError, match="before start"):
        monthly_cutoffs("2022-05-01", "2022-01-01")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.dates(min_value=pd.Timestamp("2020-01-01").date(), max_value=pd.Timestamp("2023-12-31").date()),
                min_size=1, max_size=12),
       st.dates(min_value=pd.Timestamp("2020-06-01").date(), max_value=pd.Timestamp("2024-06-01").date()),
       st.integers(1, 400))
def test_temporal_split_validation_window_starts_after_every_training_window_ends(cuts, val, horizon) -> None:
    try:
        split = temporal_split(cuts, val, horizon)
    except ValueError:
        assert all(pd.Timestamp(c) + pd.Timedelta(days=horizon) > pd.Timestamp(val) for c in cuts)
        return
    v = pd.Timestamp(val)
    assert split.train and all(c + pd.Timedelta(days=horizon) <= v for c in split.train)
    # and nothing usable was dropped
    assert {pd.Timestamp(c) for c in cuts if pd.Timestamp(c) + pd.Timedelta(days=horizon) <= v} == set(split.train)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tables = make_tables(60, 8, days=500)
    store = write_store(tmp_path_factory.mktemp("ts") / "store", tables)
    cuts = monthly_cutoffs("2022-03-01", "2022-09-01")
    return store, cuts, build_training_set(store, cuts, churn_horizon=60, ltv_horizon=120, timing_horizon=90)


def test_training_set_rows_are_features_and_labels_at_each_cutoff(built) -> None:
    store, cuts, ts = built
    f = ts.frame
    assert sorted(f["cutoff"].unique()) == cuts
    assert list(f.columns[:2]) == ["member_id", "cutoff"] and list(f.columns[-4:]) == list(LABEL_COLUMNS)
    assert not f.duplicated(["member_id", "cutoff"]).any()
    c = cuts[3]
    part = f[f.cutoff == c].reset_index(drop=True)
    labels = compute_labels(store, c, churn_horizon=60, ltv_horizon=120, timing_horizon=90)
    feats = compute_features(store, c)
    assert list(part.member_id) == list(labels.member_id)
    pd.testing.assert_frame_equal(part[list(LABEL_COLUMNS)], labels[list(LABEL_COLUMNS)])
    want = feats.set_index("member_id").loc[list(part.member_id)].reset_index()
    pd.testing.assert_frame_equal(part[ts.feature_columns], want[ts.feature_columns], check_exact=False, rtol=1e-9)


def test_manifest_and_round_trip(built, tmp_path) -> None:
    store, cuts, ts = built
    m = ts.manifest
    assert m["fingerprint"] == store.fingerprint() and m["feature_version"] == FEATURE_VERSION
    assert m["cutoffs"] == [c.isoformat() for c in cuts] and m["rows"] == len(ts.frame)
    assert m["horizons"] == {"churn_horizon": 60, "ltv_horizon": 120, "timing_horizon": 90}
    assert set(m["categorical_features"]) <= set(m["features"]) and "top_category" in m["categorical_features"]
    assert sum(m["rows_per_cutoff"].values()) == m["rows"]
    path = ts.write(tmp_path / "ts.parquet")
    back = TrainingSet.read(path)
    assert back.manifest == m
    pd.testing.assert_frame_equal(back.frame, ts.frame)


def test_split_frame_by_cutoff(built) -> None:
    _store, cuts, ts = built
    split = temporal_split(cuts, cuts[-1], 60)
    train, valid = split.split_frame(ts.frame)
    assert set(valid.cutoff) == {cuts[-1]} and len(valid) > 0
    assert train.cutoff.max() + pd.Timedelta(days=60) <= cuts[-1]


def test_label_window_past_data_is_rejected() -> None:
    tables = make_tables(10, 1, days=300)
    with pytest.raises(ValueError, match="past the last order"):
        build_training_set(tables, ["2022-06-01"], ltv_horizon=365)
