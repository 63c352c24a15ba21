"""The vectorised pieces of batch scoring on small generated data (no models needed): the recommendation lists built
as Arrow arrays equal a plain per-member groupby, the CSV form of list columns, the member count that sizes the
chunks, and each member's most active hour (earliest among ties) with the profile-completed flag."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.store import Store
from serving.batch import activity, count_members, to_table
from serving.compose import RECS_LISTS, recs_arrays, recs_columns

AS_OF = pd.Timestamp("2025-10-01")


def _reference_lists(ranked: pd.DataFrame, member_ids: list[str], top_n: int) -> dict[str, list[list]]:
    """Each member's first `top_n` rows by rank (ties in input order), one member at a time."""
    out: dict[str, list[list]] = {c: [] for c in RECS_LISTS}
    for mid in member_ids:
        rows = ranked[ranked["member_id"] == mid].sort_values("rank", kind="mergesort").head(top_n)
        out["rec_items"].append([str(x) for x in rows["item_id"]])
        out["rec_scores"].append([float(x) for x in rows["score"]])
        out["rec_reasons"].append([str(x) for x in rows["reason"]])
    return out


ranked_rows = st.lists(st.tuples(st.integers(0, 8), st.integers(1, 6), st.integers(0, 20),
                                 st.floats(0, 1, allow_nan=False), st.sampled_from(["bought before", "popular"])),
                       max_size=60)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=ranked_rows, ids=st.lists(st.integers(0, 10), max_size=12), top_n=st.integers(1, 5))
def test_recs_lists_equal_a_per_member_groupby(rows: list[tuple], ids: list[int], top_n: int) -> None:
    ranked = pd.DataFrame(rows, columns=["m", "rank", "i", "score", "reason"])
    ranked = pd.DataFrame({"member_id": pd.array([f"m{m}" for m in ranked["m"]], dtype="string"),
                           "rank": ranked["rank"].astype("int64"), "item_id": [f"i{i}" for i in ranked["i"]],
                           "score": ranked["score"].astype("float64"), "reason": ranked["reason"].astype(object)})
    member_ids = [f"m{m}" for m in ids]  # duplicates and members without any ranked row included
    want = _reference_lists(ranked, member_ids, top_n)
    arrays = recs_arrays(ranked, member_ids, top_n)
    frame = recs_columns(ranked, member_ids, top_n)
    assert frame["member_id"].tolist() == member_ids
    for c in RECS_LISTS:
        assert len(arrays[c]) == len(member_ids)
        assert arrays[c].to_pylist() == want[c], c
        assert frame[c].tolist() == want[c], c


def test_csv_table_joins_list_columns_and_parquet_keeps_lists() -> None:
    arrays = recs_arrays(pd.DataFrame({"member_id": ["a", "a", "b"], "rank": [2, 1, 1], "item_id": ["x", "y", "z"],
                                       "score": [0.5, 0.25, 1.0], "reason": ["r2", "r1", "r3"]}),
                         ["a", "b", "c"], 10)
    df = pd.DataFrame({"member_id": ["a", "b", "c"], "churn_reasons": [["few orders", "long gap"], [], ["new"]]})
    for c, arr in arrays.items():
        df[c] = pd.arrays.ArrowExtensionArray(arr)
    csv = to_table(df, "csv")
    assert csv["rec_items"].to_pylist() == ["y|x", "z", ""]
    assert [[float(x) for x in v.split("|")] if v else [] for v in csv["rec_scores"].to_pylist()] == [
        [0.25, 0.5], [1.0], []]
    assert csv["churn_reasons"].to_pylist() == ["few orders|long gap", "", "new"]
    pq = to_table(df, "parquet")
    assert pq.schema.field("rec_items").type == pa.list_(pa.string())
    assert pq["rec_scores"].to_pylist() == [[0.25, 0.5], [1.0], []]


def _write(path: Path, df: pd.DataFrame) -> None:
    df.to_parquet(path, index=False)


def test_activity_most_frequent_hour_earliest_among_ties_and_profile_flag(tmp_path: Path) -> None:
    t = lambda s: pd.Timestamp(s)  # noqa: E731
    orders = pd.DataFrame({
        "member_id": ["a", "a", "a", "b", "b", "c", "old"],
        "ordered_at": [t("2025-09-01 19:10"), t("2025-09-02 19:50"), t("2025-09-03 08:00"),  # a: 19h twice
                       t("2025-09-01 21:00"), t("2025-09-02 07:00"),  # b: tie 7h/21h, events break it below
                       t("2025-10-01 09:00"),  # c: at as_of, not before: no activity
                       t("2023-01-01 10:00")],  # older than the 365-day window
    })
    events = pd.DataFrame({
        "member_id": ["b", "b", "d", "c", "e"],
        "occurred_at": [t("2025-08-01 21:30"), t("2025-08-02 07:30"), t("2020-01-01 12:00"),
                        t("2025-09-30 23:00"), t("2025-11-01 10:00")],
        "type": ["login", "login", "profile_completed", "login", "profile_completed"],
    })
    _write(tmp_path / "orders.parquet", orders)
    _write(tmp_path / "events.parquet", events)
    act = activity(Store(tmp_path), AS_OF).set_index("member_id").sort_index()
    assert sorted(act.index) == ["a", "b", "c", "d"]  # e completed the profile after as_of; old is out of window
    assert act.loc["a", "active_hour"] == 19 and act.loc["a", "active_actions"] == 3
    assert act.loc["b", "active_hour"] == 7 and act.loc["b", "active_actions"] == 4  # 2 × 7h, 2 × 21h: earliest
    assert act.loc["c", "active_hour"] == 23 and act.loc["c", "active_actions"] == 1
    assert np.isnan(act.loc["d", "active_hour"]) and act.loc["d", "active_actions"] == 0
    assert act["profile_completed"].tolist() == [False, False, False, True]
    # without an events table nobody is known to have completed a profile
    (tmp_path / "events.parquet").unlink()
    act = activity(Store(tmp_path), AS_OF).set_index("member_id").sort_index()
    assert sorted(act.index) == ["a", "b"] and act.loc["b", "active_hour"] == 7
    assert act["profile_completed"].isna().all()


def test_count_members_uses_the_members_table_else_the_orders(tmp_path: Path) -> None:
    _write(tmp_path / "orders.parquet", pd.DataFrame({
        "member_id": ["a", "a", "b", "z"],
        "ordered_at": pd.to_datetime(["2025-01-01", "2025-02-01", "2025-03-01", "2025-12-01"])}))
    assert count_members(Store(tmp_path), AS_OF) == 2  # z ordered after as_of only
    _write(tmp_path / "members.parquet", pd.DataFrame({
        "member_id": ["a", "b", "c", "late"],
        "joined_at": pd.to_datetime(["2024-01-01", "2024-02-01", None, "2026-01-01"])}))
    assert count_members(Store(tmp_path), AS_OF) == 3  # joined before as_of, or join date unknown
