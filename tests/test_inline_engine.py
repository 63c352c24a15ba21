"""Inline histories on reused DuckDB engines (features.engine.EnginePool): a pooled engine gives exactly the fresh
engine's (and the batch's) features, never shows one request another request's rows, and two requests computed at
once on two threads each get their own answer."""
from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from features.engine import EnginePool
from features.pipeline import compute_features
from tests.fixtures_features import make_tables, write_store
from tests.two_lanes import run_two_lanes

AS_OF = pd.Timestamp("2022-11-20 18:45")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tables = make_tables(120, 33, days=420)
    store = write_store(tmp_path_factory.mktemp("inline_engine") / "store", tables)
    return tables, compute_features(store, AS_OF)


def one(tables: dict[str, pd.DataFrame], member: str, *, events: bool = True) -> dict[str, pd.DataFrame]:
    """One member's rows (as the API receives them), with the very catalogue frame the pool pinned."""
    out = {k: v[v["member_id"] == member].reset_index(drop=True) for k, v in tables.items() if "member_id" in v}
    if not events:
        out.pop("events")
    out["items"] = tables["items"]
    return out


def test_pooled_engine_equals_batch_and_forgets_each_request(world) -> None:
    tables, batch = world
    pool = EnginePool({"items": tables["items"]})
    members = list(batch["member_id"].iloc[::9])
    got = []
    for i, m in enumerate(members):
        with pool.engine() as eng:
            got.append(compute_features(one(tables, m), AS_OF, engine=eng))
            assert set(eng._loaded) == {"orders", "members", "events", "items"}
        # after the request only the pinned catalogue is left: no member rows, no registered frames
        assert set(eng._loaded) == {"items"} and eng._frames == {}
        names = {r[0] for r in eng.con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        assert names == {"items"}, names
    assert pool.created == 1  # one engine, reused for every request
    want = batch[batch["member_id"].isin(members)].reset_index(drop=True)
    pd.testing.assert_frame_equal(pd.concat(got, ignore_index=True), want, check_exact=False, rtol=1e-9, atol=1e-9)
    # a history without events after one with events: no event feature survives from the earlier request
    m = members[0]
    with pool.engine() as eng:
        compute_features(one(tables, members[1]), AS_OF, engine=eng)
    with pool.engine() as eng:
        reused = compute_features(one(tables, m, events=False), AS_OF, engine=eng)
    fresh = compute_features(one(tables, m, events=False), AS_OF)
    pd.testing.assert_frame_equal(reused, fresh, check_exact=True)
    pool.close()


def test_a_failing_request_leaves_a_clean_engine(world) -> None:
    tables, batch = world
    pool = EnginePool({"items": tables["items"]})
    bad = one(tables, batch["member_id"].iloc[0])
    bad["orders"] = bad["orders"].drop(columns="ordered_at")
    with pytest.raises(ValueError, match="ordered_at"), pool.engine() as eng:
        compute_features(bad, AS_OF, engine=eng)
    m = batch["member_id"].iloc[1]
    with pool.engine() as eng2:
        assert eng2 is eng and set(eng2._loaded) == {"items"}
        got = compute_features(one(tables, m), AS_OF, engine=eng2)
    pd.testing.assert_frame_equal(got, batch[batch["member_id"] == m].reset_index(drop=True),
                                  check_exact=False, rtol=1e-9, atol=1e-9)


def test_two_threads_at_once_get_their_own_answers(world) -> None:
    tables, batch = world
    pool = EnginePool({"items": tables["items"]})
    ids = batch["member_id"].to_numpy(dtype=object)
    rng = np.random.default_rng(4)
    lanes = [list(rng.choice(ids, 10, replace=False)) for _ in range(2)]
    def lane(k: int) -> list[pd.DataFrame]:
        out = []
        for m in lanes[k]:
            with pool.engine() as eng:
                out.append(compute_features(one(tables, m), AS_OF, engine=eng))
        return out

    results = run_two_lanes(lane, timeout_s=120)
    assert pool.created <= 2
    for k in (0, 1):
        got = pd.concat(results[k], ignore_index=True)
        assert got["member_id"].tolist() == lanes[k]
        want = batch.set_index("member_id").loc[lanes[k]].reset_index()
        pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-9, atol=1e-9)
