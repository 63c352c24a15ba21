"""No leakage: changing, adding or deleting any rows at or after the cutoff T leaves every feature at T unchanged.

Hypothesis draws T and a list of edits; every edit touches only rows whose own timestamp is ≥ T (orders and events),
members whose joined_at is ≥ T, or adds such rows (for existing and new members). Items carry no timestamp (a
static catalogue) and are not edited.
"""
from __future__ import annotations

import functools

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.engine import DuckDBEngine
from features.pipeline import compute_features, compute_recent_items
from tests.fixtures_features import START, make_tables

BASE = make_tables(14, 11, days=400)
CUTOFFS = [START + pd.Timedelta(days=d) for d in (60, 200, 333)] + [pd.Timestamp("2022-07-19 13:37:00")]


@functools.cache
def baseline(i: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    t = CUTOFFS[i]
    return compute_features(BASE, t), compute_recent_items(BASE, t)


EDIT = st.tuples(
    st.sampled_from(["change", "add", "delete", "move"]),
    st.sampled_from(["orders", "events", "members"]),
    st.integers(0, 10_000),  # which row
    st.floats(0.0, 400.0, allow_nan=False),  # days at/after T for new or moved rows
    st.integers(0, 10_000),  # value seed
)


def _future_mask(df: pd.DataFrame, table: str, t: pd.Timestamp) -> np.ndarray:
    col = {"orders": "ordered_at", "events": "occurred_at", "members": "joined_at"}[table]
    return (df[col] >= t).to_numpy(dtype=bool, na_value=False)


def apply_edits(tables: dict[str, pd.DataFrame], t: pd.Timestamp, edits) -> dict[str, pd.DataFrame]:
    out = {k: v.copy() for k, v in tables.items()}
    for op, table, which, days, seed in edits:
        rng = np.random.default_rng(seed)
        df = out[table]
        future = np.flatnonzero(_future_mask(df, table, t))
        when = (t + pd.Timedelta(days=days)).floor("s")
        tcol = {"orders": "ordered_at", "events": "occurred_at", "members": "joined_at"}[table]
        if op == "add" or len(future) == 0:
            row = df.iloc[[which % len(df)]].copy()
            row[tcol] = when
            if rng.random() < 0.3:
                row["member_id"] = f"new{seed}"
            out[table] = pd.concat([df, row], ignore_index=True)
            continue
        i = future[which % len(future)]
        if op == "delete":
            out[table] = df.drop(index=df.index[i]).reset_index(drop=True)
        elif op == "move":
            df.loc[df.index[i], tcol] = when
        else:  # change values of a future row
            if table == "orders":
                df.loc[df.index[i], "amount"] = float(rng.uniform(0, 500))
                df.loc[df.index[i], "status"] = str(rng.choice(["paid", "refunded", "cancelled"]))
                df.loc[df.index[i], "category"] = str(rng.choice(["美妆", "新类目"]))
                df.loc[df.index[i], "member_id"] = str(rng.choice(df["member_id"].unique()))
                df.loc[df.index[i], "discount"] = float(rng.uniform(0, 50))
            elif table == "events":
                df.loc[df.index[i], "type"] = str(rng.choice(["view", "redeem", "login"]))
                df.loc[df.index[i], "member_id"] = str(rng.choice(df["member_id"].unique()))
            else:
                df.loc[df.index[i], "gender"] = "U" if df["gender"].iloc[i] != "U" else "F"
                df.loc[df.index[i], "region"] = "新疆"
                df.loc[df.index[i], "age"] = float(rng.integers(18, 80))
    return out


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(CUTOFFS) - 1), st.lists(EDIT, min_size=1, max_size=6))
def test_edits_at_or_after_cutoff_do_not_change_features(i: int, edits) -> None:
    t = CUTOFFS[i]
    edited = apply_edits(BASE, t, edits)
    with DuckDBEngine(threads=1) as eng:
        got = compute_features(edited, t, engine=eng)
        items = compute_recent_items(edited, t, engine=eng)
    want, want_items = baseline(i)
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-9, atol=1e-9)
    pd.testing.assert_frame_equal(items, want_items)


def test_an_edit_before_cutoff_does_change_features() -> None:
    """The property above is not vacuous: the same kind of edit before T is seen."""
    t = CUTOFFS[1]
    edited = {k: v.copy() for k, v in BASE.items()}
    o = edited["orders"]
    i = int(np.flatnonzero((o["ordered_at"] < t) & (o["status"] == "paid"))[0])
    o.loc[o.index[i], "amount"] += 100.0
    got = compute_features(edited, t)
    want, _ = baseline(1)
    assert not np.allclose(got["spend_lifetime"].fillna(-1), want["spend_lifetime"].fillna(-1))
    edited["orders"] = pd.concat([o, o.iloc[[i]].assign(ordered_at=t - pd.Timedelta(seconds=1),
                                                        order_id="late")], ignore_index=True)
    got2 = compute_features(edited, t)
    assert (got2["orders_30d"] != want["orders_30d"]).any()
