"""The replenishment estimator in parts (what chunked and Spark batch scoring rely on): member-local cycles per
chunk, per-category counts summed over chunks, the store's category stats, rows finished per chunk: equal to the
estimator run on the whole store, for any split of the members. No Spark needed: these are the pandas parts the
Spark stages call."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.member_pyfunc.replenishment import (CATEGORY_COLUMNS, category_counts, category_stats,
                                                  estimate_cycles, finish_cycles, pair_cycles)

T0 = pd.Timestamp("2024-01-01")
AS_OF = T0 + pd.Timedelta(days=400)


def orders_frame(rows: list[tuple[int, int, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"member_id": f"m{m}", "category": f"c{c}", "status": "paid",
                          "ordered_at": T0 + pd.Timedelta(days=d)} for m, c, d in rows])


def chunked(orders: pd.DataFrame, parts: np.ndarray, params: dict | None = None) -> pd.DataFrame:
    split = [orders[parts == k] for k in np.unique(parts)]
    pairs = [pair_cycles(o, AS_OF, params=params) for o in split]
    cats = category_stats(pd.concat([category_counts(p) for p in pairs], ignore_index=True))
    out = pd.concat([finish_cycles(p, cats, AS_OF, params=params) for p in pairs], ignore_index=True)
    return out.sort_values(["member_id", "category"]).reset_index(drop=True)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 11), st.integers(0, 2), st.integers(0, 390)), min_size=1, max_size=150),
       st.integers(1, 4), st.integers(0, 10_000))
def test_any_split_of_the_members_gives_the_whole_store_rows(rows, k, seed):
    orders = orders_frame(rows)
    member_part = {f"m{m}": p for m, p in enumerate(np.random.default_rng(seed).integers(0, k, 12))}
    parts = orders["member_id"].map(member_part).to_numpy()
    whole = estimate_cycles(orders, AS_OF, params={"category_min_pairs": 2})
    pd.testing.assert_frame_equal(chunked(orders, parts, {"category_min_pairs": 2}), whole)


def test_category_median_is_the_store_median_on_the_log_scale():
    # two members with cycles 10 and 40 days, in different chunks: the category median is √(10·40) = 20 days
    rows = [(0, 0, d) for d in range(0, 100, 10)] + [(1, 0, d) for d in range(0, 400, 40)]
    orders = orders_frame(rows)
    pairs = [pair_cycles(orders[orders["member_id"] == m], AS_OF) for m in ("m0", "m1")]
    counts = pd.concat([category_counts(p) for p in pairs], ignore_index=True)
    assert counts["pairs"].sum() == 2
    cats = category_stats(counts)
    assert list(cats.columns) == list(CATEGORY_COLUMNS)
    assert cats["n_pairs"].tolist() == [2] and cats["regular_share"].tolist() == [1.0]
    assert np.exp(cats["median_log_cycle"].iloc[0]) == pytest.approx(20.0)
    # counts with equal keys from several chunks add up (the same cycle twice → its weight is 2)
    doubled = category_stats(pd.concat([counts, counts.iloc[[0]]], ignore_index=True))
    assert doubled["n_pairs"].tolist() == [3]
    assert np.exp(doubled["median_log_cycle"].iloc[0]) == pytest.approx(counts["cycle_days"].iloc[0])


def test_a_category_unknown_to_the_stats_is_not_shrunk():
    orders = orders_frame([(0, 0, d) for d in range(0, 300, 30)])
    pairs = pair_cycles(orders, AS_OF)
    empty = category_stats(category_counts(pairs.iloc[0:0]))
    out = finish_cycles(pairs, empty, AS_OF)
    assert out["due_cycle_days"].tolist() == [pytest.approx(30.0)] and out["category_regular"].isna().all()
    with pytest.raises(ValueError, match="category stats"):
        finish_cycles(pairs, empty.drop(columns="n_pairs"), AS_OF)
