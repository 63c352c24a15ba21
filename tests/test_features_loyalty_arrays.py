"""The DuckDB-coded loyalty path (features.loyalty_arrays + loyalty.arrays) equals member_state over DataFrames."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import pipeline
from tests.fixtures_features import make_tables, write_store

pytest.importorskip("loyalty.batch")

AS_OF = "2022-10-01"


def messy_tables(n: int = 60, seed: int = 3, shared_order: bool = True) -> dict[str, pd.DataFrame]:
    """make_tables plus what the rules must handle: exact duplicate rows, lines without an item or an amount, one
    order id shared by two members, integer redemptions, events without an item, an events-only member of a type
    the rules do not read, a member known only from the members table."""
    t = make_tables(n, seed)
    o, ev, mem = t["orders"], t["events"], t["members"]
    rng = np.random.default_rng(seed)
    o.loc[o.index[::17], "item_id"] = None
    o.loc[o.index[5::23], "amount"] = np.nan
    shared = o.iloc[[0]].assign(member_id=o["member_id"].iloc[-1])  # o1 also under another member
    o = pd.concat([o, o.iloc[::29]] + ([shared] if shared_order else []), ignore_index=True)  # exact duplicates
    red = ev.sample(40, random_state=seed).assign(type="redeem", value=rng.integers(1, 60, 40).astype(float))
    extra = pd.DataFrame({"member_id": ["zz_events_only", "zz_events_only"], "type": ["mystery", "mystery"],
                          "occurred_at": pd.to_datetime(["2022-02-01", "2022-02-01"]), "item_id": [None, None],
                          "value": [np.nan, np.nan]})
    ev = pd.concat([ev, red, ev.iloc[::31], extra], ignore_index=True)
    ev.loc[ev.index[::13], "item_id"] = None
    mem = pd.concat([mem, pd.DataFrame({"member_id": ["zz_registered"], "joined_at": [pd.Timestamp("2021-01-01")],
                                        "birthday": [pd.Timestamp("1990-10-05")]})], ignore_index=True)
    return {**t, "orders": o, "events": ev, "members": mem}


def _both(source, monkeypatch, as_of=AS_OF):
    new = pipeline.compute_features_and_loyalty(source, as_of)
    with monkeypatch.context() as m:
        m.setattr(pipeline, "_arrays_path", lambda fn, eng: False)
        old = pipeline.compute_features_and_loyalty(source, as_of)
    return new, old


@pytest.mark.parametrize("as_of", ["2022-03-01", AS_OF])
def test_arrays_path_equals_dataframe_path(monkeypatch, as_of) -> None:
    (feats, state), (feats0, state0) = _both(messy_tables(), monkeypatch, as_of)
    assert state is not None and len(state) == len(feats)
    assert {"zz_events_only", "zz_registered"} <= set(state["member_id"])
    assert ((state["points_redeemed"] > 0) | (state["redemptions_rejected"] > 0)).any()
    assert (state["tier_rank"] > 0).any()
    pd.testing.assert_frame_equal(feats, feats0, check_exact=True)
    pd.testing.assert_frame_equal(state, state0, check_exact=True)


def test_arrays_path_on_a_store_in_member_parts(tmp_path, monkeypatch) -> None:
    """Parquet store, and the rules cut into many member parts (two threads): the same state. (An order id shared
    by members of two parts would count as two orders there, one order in one part: loyalty.batch.split_members,
    as the member batches of the DataFrame path; ids here are unique per member.)"""
    import loyalty.batch

    store = write_store(tmp_path / "s", messy_tables(80, 5, shared_order=False))
    (feats, state), (feats0, state0) = _both(store, monkeypatch)
    pd.testing.assert_frame_equal(feats, feats0, check_exact=True)
    pd.testing.assert_frame_equal(state, state0, check_exact=True)
    monkeypatch.setattr(loyalty.batch, "PARALLEL_LINES", 10)
    monkeypatch.setattr(pipeline, "LOYALTY_CHUNK_ROWS", 60)
    parts, parts_state = pipeline.compute_features_and_loyalty(store, AS_OF)
    pd.testing.assert_frame_equal(parts, feats, check_exact=True)
    pd.testing.assert_frame_equal(parts_state, state, check_exact=True)


def test_member_codes_without_the_feature_population(monkeypatch) -> None:
    """Without the feature rows (or with an incomplete list) members are coded by the tables' own ids."""
    from features.engine import as_timestamp, open_engine

    tables = messy_tables(30, 1)
    _, state = pipeline.compute_features_and_loyalty(tables, AS_OF)
    eng, present, _ = open_engine(tables)
    try:
        for ids in (None, list(state["member_id"][::2]), list(state["member_id"][::-1])):
            cols, st = pipeline._loyalty_features(eng, present, as_timestamp(AS_OF), ids)
            pd.testing.assert_frame_equal(st, state, check_exact=True)
            assert cols["member_id"].tolist() == state["member_id"].tolist()
    finally:
        eng.close()


@pytest.mark.parametrize("present", [("orders",), ("orders", "events"), ("orders", "members"), ("orders", "items")])
def test_overlapped_path_on_fewer_tables(monkeypatch, present) -> None:
    """compute_features runs the loyalty rules beside the feature SQL with members coded by the tables' own ids
    (`member_codes_sql`, distinct even with orders alone): the same frames as the DataFrame path and as the
    sequential arrays path (members coded by the feature rows)."""
    from features.engine import as_timestamp, open_engine
    from features.loyalty_arrays import loyalty_state_job

    tables = {k: v for k, v in messy_tables(40, 2).items() if k in present}
    (feats, state), (feats0, state0) = _both(tables, monkeypatch)
    pd.testing.assert_frame_equal(feats, feats0, check_exact=True)
    pd.testing.assert_frame_equal(state, state0, check_exact=True)
    assert state["member_id"].is_unique and state["member_id"].tolist() == feats["member_id"].tolist()
    eng, tabs, _ = open_engine(tables)
    try:
        df = eng.run(pipeline.feature_plan(pipeline.sql_literal_timestamp(as_timestamp(AS_OF)), tabs))
        cols, st = pipeline._loyalty_features(eng, tabs, as_timestamp(AS_OF), member_ids=df["member_id"])
        job = loyalty_state_job(eng.con, tabs, as_timestamp(AS_OF), None, None, None)
    finally:
        eng.close()
    pd.testing.assert_frame_equal(st, state, check_exact=True)
    job()  # runs without the (closed) connection
    with pytest.raises(RuntimeError, match="already run"):
        job()


@pytest.mark.parametrize("change, message", [
    (lambda t: t["orders"].assign(status=np.where(t["orders"].index == 3, "lost", t["orders"]["status"])),
     r"orders\.status: unknown value\(s\) \['lost'\]"),
    (lambda t: t["orders"].assign(amount=np.where(t["orders"].index == 3, -5.0, t["orders"]["amount"])),
     r"orders\.amount: 1 negative"),
    (lambda t: t["orders"].assign(member_id=t["orders"]["member_id"].where(t["orders"].index != 3, None)),
     r"orders\.member_id: 1 null"),
    (lambda t: t["orders"].assign(order_id=t["orders"]["order_id"].where(t["orders"].index != 3, None)),
     r"orders\.order_id: 1 null"),
])
def test_bad_rows_are_named_as_member_state_names_them(change, message) -> None:
    from loyalty.frames import LoyaltyInputError

    t = make_tables(20, 2)
    t["orders"] = change(t)
    with pytest.raises(LoyaltyInputError, match=message):
        pipeline.compute_features_and_loyalty(t, AS_OF)
