"""Training/serving parity: features from a member's inline history (only that member's rows, as in-memory tables,
as the online API receives them) equal the batch features computed over the whole store (Parquet) for that member."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.engine import DuckDBEngine
from features.online import OnlineFeatureTable, materialize
from features.pipeline import compute_features, compute_recent_items
from tests.fixtures_features import make_tables, write_store

AS_OF = pd.Timestamp("2022-11-20 18:45")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tables = make_tables(400, 21, days=420)
    store = write_store(tmp_path_factory.mktemp("parity") / "store", tables)
    batch = compute_features(store, AS_OF)
    return tables, store, batch


def inline_history(tables: dict[str, pd.DataFrame], ids) -> dict[str, pd.DataFrame]:
    """What the online API gets: the members' own rows from every member table (and the item catalogue)."""
    ids = set(ids)
    return {k: (v[v["member_id"].isin(ids)].reset_index(drop=True) if "member_id" in v else v)
            for k, v in tables.items()}


def test_inline_histories_of_hundreds_of_members_equal_batch(world) -> None:
    tables, _store, batch = world
    rng = np.random.default_rng(0)
    sample = sorted(rng.choice(batch["member_id"].to_numpy(dtype=object), 300, replace=False))
    inline = compute_features(inline_history(tables, sample), AS_OF)
    want = batch[batch["member_id"].isin(sample)].reset_index(drop=True)
    assert len(inline) == 300
    pd.testing.assert_frame_equal(inline, want, check_exact=False, rtol=1e-9, atol=1e-9)


def test_one_member_at_a_time_equals_batch(world) -> None:
    tables, store, batch = world
    rng = np.random.default_rng(1)
    sample = list(rng.choice(batch["member_id"].to_numpy(dtype=object), 12, replace=False))
    rows = []
    with DuckDBEngine(threads=1) as eng:
        for m in sample:
            one = compute_features(inline_history(tables, [m]), AS_OF, engine=eng)
            assert len(one) == 1
            rows.append(one)
    got = pd.concat(rows, ignore_index=True).sort_values("member_id", ignore_index=True)
    want = batch[batch["member_id"].isin(sample)].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-9, atol=1e-9)
    items = compute_recent_items(inline_history(tables, sample[:5]), AS_OF)
    pd.testing.assert_frame_equal(items, compute_recent_items(store, AS_OF, members=sample[:5]))


def test_online_table_serves_the_batch_features(world, tmp_path) -> None:
    tables, store, batch = world
    path = materialize(store, AS_OF, tmp_path / "online.duckdb")
    tbl = OnlineFeatureTable(path)
    assert len(tbl) == len(batch) and tbl.as_of == AS_OF
    for m in batch["member_id"].iloc[::80]:
        got = tbl.get(m)
        inline = compute_features(inline_history(tables, [m]), AS_OF).iloc[0].to_dict()
        assert got.keys() == inline.keys()
        for k, v in inline.items():
            if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
                assert got[k] is None, k
            elif isinstance(v, float):
                assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-9), k
            else:
                assert got[k] == v, k
