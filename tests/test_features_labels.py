"""Labels and items bought next, checked against slow, obviously-correct Python references."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from features.labels import LabelWindowError, compute_labels, items_bought
from tests.fixtures_features import make_tables, write_store


def reference_labels(orders: pd.DataFrame, cutoff: pd.Timestamp, churn_h: int, ltv_h: int, timing_h: int) -> dict:
    """Row-by-row reference: {member_id: (churn, ltv, days_to_next, next_observed)}."""
    out = {}
    members = sorted({r.member_id for r in orders.itertuples() if r.status == "paid" and r.ordered_at < cutoff})
    for m in members:
        paid_future = []
        net = 0.0
        for r in orders.itertuples():
            if r.member_id != m or r.ordered_at < cutoff:
                continue
            if r.status == "paid":
                paid_future.append(r.ordered_at)
            if r.ordered_at < cutoff + pd.Timedelta(days=ltv_h):
                net += r.amount if r.status == "paid" else -r.amount
        churn = 0 if any(t < cutoff + pd.Timedelta(days=churn_h) for t in paid_future) else 1
        nxt = min(paid_future) if paid_future else None
        if nxt is not None and nxt < cutoff + pd.Timedelta(days=timing_h):
            days, obs = (nxt - cutoff).total_seconds() / 86400, 1
        else:
            days, obs = float(timing_h), 0
        out[m] = (churn, max(net, 0.0), days, obs)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("cutoff", ["2022-06-01", "2022-09-15 13:30"])
def test_labels_match_reference(seed: int, cutoff: str) -> None:
    tables = make_tables(30, seed)
    t = pd.Timestamp(cutoff)
    got = compute_labels(tables, t, churn_horizon=60, ltv_horizon=120, timing_horizon=45)
    ref = reference_labels(tables["orders"], t, 60, 120, 45)
    assert list(got["member_id"]) == sorted(ref)
    assert len(got) > 5
    for row in got.itertuples():
        churn, ltv, days, obs = ref[row.member_id]
        assert row.churn == churn, row.member_id
        assert math.isclose(row.ltv, ltv, rel_tol=1e-9, abs_tol=1e-9), row.member_id
        assert math.isclose(row.days_to_next, days, rel_tol=1e-9), row.member_id
        assert row.next_observed == obs
    assert set(got["churn"]) == {0, 1}  # both classes present: the comparison is not vacuous
    assert got.attrs["churn_horizon"] == 60


def test_labels_same_from_store_and_frames(tmp_path) -> None:
    tables = make_tables(25, 5)
    store = write_store(tmp_path / "s", tables)
    a = compute_labels(store, "2022-07-01", ltv_horizon=200)
    b = compute_labels(tables, "2022-07-01", ltv_horizon=200)
    pd.testing.assert_frame_equal(a, b)


def test_label_window_past_data_end_is_an_error() -> None:
    tables = make_tables(10, 0, days=300)
    with pytest.raises(LabelWindowError, match="ltv_horizon"):
        compute_labels(tables, "2022-08-01")  # default ltv horizon 365 runs past the data
    got = compute_labels(tables, "2022-08-01", strict=False)
    assert len(got) > 0


def test_ltv_null_when_store_has_no_amounts() -> None:
    tables = make_tables(10, 0, null_amounts=True)
    got = compute_labels(tables, "2022-06-01", ltv_horizon=90)
    assert got["ltv"].isna().all() and got["churn"].notna().all()


def test_bad_horizon_and_cutoff_named() -> None:
    tables = make_tables(5, 0)
    with pytest.raises(ValueError, match="churn_horizon"):
        compute_labels(tables, "2022-06-01", churn_horizon=0)
    with pytest.raises(ValueError, match="cutoff"):
        compute_labels(tables, "not a date")


def test_items_bought_matches_reference() -> None:
    tables = make_tables(30, 3)
    t, h = pd.Timestamp("2022-05-01"), 60
    got = items_bought(tables, t, h)
    o = tables["orders"]
    counts: dict[tuple[str, str], int] = {}
    for r in o.itertuples():
        if r.status == "paid" and t <= r.ordered_at < t + pd.Timedelta(days=h):
            counts[(r.member_id, r.item_id)] = counts.get((r.member_id, r.item_id), 0) + 1
    assert {(r.member_id, r.item_id): r.n for r in got.itertuples()} == counts
    assert len(counts) > 10
    one = got["member_id"].iloc[0]
    sub = items_bought(tables, t, h, members=[one])
    assert set(sub["member_id"]) == {one}
    assert np.array_equal(sub["n"].to_numpy(), got.loc[got.member_id == one, "n"].to_numpy())
