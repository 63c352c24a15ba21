"""Feature values on hand-made histories, feature sets by present tables, null monetary data, the Store path."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from features.pipeline import (FEATURE_VERSION, categorical_features, compute_features, compute_recent_items,
                               feature_catalog, feature_names)
from tests.fixtures_features import make_tables, write_store

T = pd.Timestamp("2023-01-01")


def _line(order_id, member, when, amount, *, item="i1", category="美妆", status="paid", quantity=1.0,
          discount=0.0, coupon=False):
    return dict(order_id=order_id, member_id=member, ordered_at=pd.Timestamp(when), amount=amount, item_id=item,
                category=category, quantity=quantity, discount=discount, coupon_used=coupon, status=status)


def hand_tables() -> dict[str, pd.DataFrame]:
    orders = pd.DataFrame([
        # member a: orders on 2022-06-01 (2 lines), 2022-10-01, 2022-12-22 20:00; one refund; one line after T
        _line("o1", "a", "2022-06-01 10:00", 100.0, category="美妆", quantity=2, discount=10.0, coupon=True),
        _line("o1", "a", "2022-06-01 10:00", 50.0, item="i2", category="食品"),
        _line("o2", "a", "2022-10-01 10:00", 80.0, item="i3", category="美妆"),
        _line("o2", "a", "2022-12-15 09:00", 30.0, item="i3", category="美妆", status="refunded"),
        _line("o3", "a", "2022-12-22 20:00", 20.0, item="i1", category="美妆", discount=5.0),
        _line("o9", "a", "2023-01-01 00:00", 999.0),  # exactly at T: excluded
        # member b: a single order long ago
        _line("o4", "b", "2021-01-01 12:00", 10.0, category=None, item="i9"),
        # member c: only after T: not in the population
        _line("o5", "c", "2023-02-01", 10.0),
    ])
    members = pd.DataFrame({
        "member_id": ["a", "b", "d", "e"],
        "joined_at": pd.to_datetime(["2022-01-01", None, "2022-05-01", "2023-03-01"]),
        "birthday": pd.to_datetime(["1990-01-11", None, None, None]),
        "gender": ["F", "M", "U", "F"], "age": [None, 40.0, 30.0, 22.0],
        "region": ["浙江", "广东", None, "上海"], "channel": ["app", "web", "app", "app"],
        "marketing_consent": [True, False, True, True],
    })
    events = pd.DataFrame({
        "member_id": ["a", "a", "a", "d", "a"],
        "occurred_at": pd.to_datetime(["2022-12-30", "2022-11-01", "2022-12-31 23:59:59", "2022-12-01", "2023-01-02"], format="ISO8601"),
        "type": ["view", "view", "checkin", "login", "view"],
    })
    items = pd.DataFrame({"item_id": ["i9"], "category": ["数码"]})
    return {"orders": orders, "members": members, "events": events, "items": items}


def test_hand_computed_values() -> None:
    df = compute_features(hand_tables(), T).set_index("member_id")
    assert list(df.index) == ["a", "b", "d"]  # c only after T, e joined after T
    a = df.loc["a"]
    assert a.orders_lifetime == 3 and a.orders_30d == 1 and a.orders_90d == 1 and a.orders_180d == 2 and a.orders_365d == 3
    assert a.spend_lifetime == pytest.approx(150 + 80 + 20 - 30)
    assert a.spend_30d == pytest.approx(20 - 30)  # the refund row falls in the last 30 days
    assert a.spend_90d == pytest.approx(20 - 30) and a.spend_180d == pytest.approx(80 + 20 - 30)
    assert a.recency_days == pytest.approx(9 + 4 / 24)  # 2022-12-22 20:00 → 2023-01-01
    gaps = [122.0, 82 + 10 / 24]  # 06-01→10-01, 10-01 10:00→12-22 20:00
    assert a.gap_mean_days == pytest.approx(np.mean(gaps))
    assert a.gap_std_days == pytest.approx(np.std(gaps, ddof=1))
    assert a.gap_last_days == pytest.approx(gaps[-1])
    assert a.recency_over_gap == pytest.approx(a.recency_days / np.mean(gaps))
    assert a.tenure_days == pytest.approx(365)
    assert a.avg_order_value == pytest.approx(250 / 3)
    assert a.max_order_value == pytest.approx(150)
    assert a.items_per_order == pytest.approx(5 / 3) and a.lines_per_order == pytest.approx(4 / 3)
    assert a.n_categories == 2 and a.top_category == "美妆"
    p = np.array([3, 1]) / 4
    assert a.category_entropy == pytest.approx(-(p * np.log(p)).sum())
    assert a.top_category_share == pytest.approx(0.75)
    assert a.discount_rate == pytest.approx(15 / 265)
    assert a.discounted_order_share == pytest.approx(2 / 3) and a.coupon_order_share == pytest.approx(1 / 3)
    assert a.refund_line_rate == pytest.approx(1 / 4) and a.refund_amount_rate == pytest.approx(30 / 250)
    assert a.orders_prior_90d == 1  # [T-180d, T-90d) = [2022-07-05, 2022-10-03) holds the 2022-10-01 order
    assert a.evening_order_share == pytest.approx(1 / 3)
    assert a.preferred_hour == 10 and a.preferred_weekday == 2  # 2022-06-01 Wed, 2022-10-01 Sat, 12-22 Thu → tie → lowest
    assert a.events_lifetime == 3 and a.ev_view_30d == 1 and a.ev_view_90d == 2 and a.ev_checkin_30d == 1
    assert a.days_to_birthday == 10 and a.age == pytest.approx((T - pd.Timestamp("1990-01-11")).days / 365.25)
    assert a.gender == "F" and a.marketing_consent == 1
    b = df.loc["b"]
    assert b.top_category == "数码"  # filled from the item catalogue
    assert b.tenure_days == pytest.approx((T - pd.Timestamp("2021-01-01 12:00")).total_seconds() / 86400)
    assert math.isnan(b.gap_mean_days) and b.marketing_consent == 0 and b.age == 40
    d = df.loc["d"]  # registered, never ordered
    assert d.orders_lifetime == 0 and math.isnan(d.spend_lifetime) and math.isnan(d.recency_days)
    assert d.ev_login_90d == 1 and d.tenure_days == pytest.approx(245)


def test_prior_window_counts() -> None:
    tables = hand_tables()
    # T-180d = 2022-07-05, T-90d = 2022-10-03: the 2022-10-01 order is in the prior window
    df = compute_features(tables, T).set_index("member_id")
    assert df.loc["a", "orders_prior_90d"] == 1
    assert df.loc["a", "orders_trend"] == pytest.approx((1 - 1) / 2)


def test_columns_match_feature_names_and_catalog() -> None:
    df = compute_features(hand_tables(), T)
    assert list(df.columns) == ["member_id", *feature_names()]
    cats = categorical_features()
    assert set(cats) == {"top_category", "gender", "region", "channel"}
    for c in df.columns[1:]:
        assert (df[c].dtype == "string") == (c in cats), c
        if c not in cats:
            assert df[c].dtype == "float64", c
    cat = feature_catalog()
    assert list(cat["name"]) == feature_names() and cat["description"].str.len().min() > 5
    assert df.attrs["feature_version"] == FEATURE_VERSION


@pytest.mark.parametrize("present", [("orders",), ("orders", "events"), ("orders", "members"), ("orders", "items")])
def test_missing_optional_tables_give_smaller_set(present) -> None:
    tables = {k: v for k, v in hand_tables().items() if k in present}
    df = compute_features(tables, T)
    assert list(df.columns) == ["member_id", *feature_names(present)]
    assert len(feature_names(present)) < len(feature_names())
    assert ("ev_view_30d" in df.columns) == ("events" in present)
    assert ("gender" in df.columns) == ("members" in present)
    assert df.loc[df.member_id == "a", "orders_lifetime"].item() == 3


def test_null_amounts_give_null_monetary_not_zero() -> None:
    tables = make_tables(20, 4, null_amounts=True)
    df = compute_features(tables, "2022-08-01")
    buyers = df[df.orders_lifetime > 0]
    assert len(buyers) > 5
    for c in ("spend_lifetime", "spend_30d", "avg_order_value", "discount_rate", "spend_trend"):
        assert buyers[c].isna().all(), c
    assert buyers["orders_90d"].notna().all() and buyers["gap_mean_days"].notna().any()


def test_store_and_frames_agree_and_members_filter(tmp_path) -> None:
    tables = make_tables(50, 2)
    store = write_store(tmp_path / "s", tables)
    a = compute_features(store, "2022-09-10 08:00")
    b = compute_features(tables, "2022-09-10 08:00")
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9)
    few = ["m0003", "m0010", "nobody"]
    c = compute_features(store, "2022-09-10 08:00", members=few)
    assert list(c.member_id) == ["m0003", "m0010"]
    pd.testing.assert_frame_equal(c, a[a.member_id.isin(few)].reset_index(drop=True), check_exact=False, rtol=1e-9)


def test_recent_items() -> None:
    items = compute_recent_items(hand_tables(), T)
    got = {(r.member_id, r.item_id): (r.n_bought, r.category) for r in items.itertuples()}
    # member b's 2021 order is older than 365 days; o2's i3 was refunded (it no longer counts as bought, as in the
    # recommender's own history summary); the T row is excluded
    assert got == {("a", "i1"): (2, "美妆"), ("a", "i2"): (1, "食品")}
    assert items.loc[items.item_id == "i1", "last_bought_at"].item() == pd.Timestamp("2022-12-22 20:00")


def test_bad_inputs_named() -> None:
    with pytest.raises(ValueError, match="as_of"):
        compute_features(hand_tables(), "yesterday-ish")
    bad = hand_tables()
    bad["orders"] = bad["orders"].drop(columns=["ordered_at"])
    with pytest.raises(ValueError, match="ordered_at"):
        compute_features(bad, T)
    with pytest.raises(ValueError, match="orders"):
        compute_features({"members": hand_tables()["members"]}, T)


def test_loyalty_state_wired_and_batched_loyalty_equals_single_batch(monkeypatch) -> None:
    from features import pipeline

    if pipeline.loyalty_state_fn() is None:
        pytest.skip("loyalty package not importable")
    tables = make_tables(40, 6)
    whole = compute_features(tables, "2022-10-01")
    assert {"tier_rank", "points_balance", "spend_to_next_tier"} <= set(whole.columns)
    assert whole["tier_rank"].notna().any() and (whole["points_balance"] > 0).any()
    _, state = pipeline.compute_features_and_loyalty(tables, "2022-10-01")
    monkeypatch.setattr(pipeline, "LOYALTY_CHUNK_ROWS", 50)  # many member batches
    batched, batched_state = pipeline.compute_features_and_loyalty(tables, "2022-10-01")
    pd.testing.assert_frame_equal(batched, whole)
    pd.testing.assert_frame_equal(batched_state, state)
    monkeypatch.setattr(pipeline, "_loyalty_event_types", lambda: None)  # every event fetched, one batch
    monkeypatch.setattr(pipeline, "LOYALTY_CHUNK_ROWS", 10**9)
    every, every_state = pipeline.compute_features_and_loyalty(tables, "2022-10-01")
    pd.testing.assert_frame_equal(every, whole)
    pd.testing.assert_frame_equal(every_state, state)


def test_recent_items_take_catalogue_category_when_lines_have_none() -> None:
    tables = hand_tables()
    t = pd.Timestamp("2021-06-01")  # member b's i9 line (no category) is inside the 365 days
    items = compute_recent_items(tables, t)
    assert items.loc[items.item_id == "i9", "category"].item() == "数码"
    no_catalogue = compute_recent_items({k: v for k, v in tables.items() if k != "items"}, t)
    assert no_catalogue.loc[no_catalogue.item_id == "i9", "category"].isna().all()


def test_features_and_labels_are_bit_for_bit_reproducible(tmp_path) -> None:
    """Money sums are exact decimals and gap statistics exact integer sums: no run-to-run float noise (parallel
    aggregation order) that would make two trainings on the same data differ."""
    from features.engine import DuckDBEngine
    from features.labels import compute_labels

    store = write_store(tmp_path / "s", make_tables(300, 9))
    runs = []
    for threads in (1, 2, 2):
        with DuckDBEngine(threads=threads) as eng:
            runs.append((compute_features(store, "2022-09-01", engine=eng),
                         compute_labels(store, "2022-06-01", ltv_horizon=120, engine=eng)))
    for feats, labels in runs[1:]:
        pd.testing.assert_frame_equal(feats, runs[0][0], check_exact=True)
        pd.testing.assert_frame_equal(labels, runs[0][1], check_exact=True)


def test_refund_only_members_tied_order_times_and_uncategorised_lines() -> None:
    """Edge cases of the single-pass definitions: a member with only a refund row is in the population; orders at
    equal times give a 0 gap whichever way the tie is broken; paid lines no category reaches still count in the
    line sums but not in the category mix."""
    d1, d2 = "2022-12-01 10:00", "2022-12-11 10:00"
    orders = pd.DataFrame([
        _line("r1", "r", "2022-11-01", 40.0, status="refunded"),
        _line("t1", "t1", d1, 10.0), _line("t2", "t1", d1, 10.0), _line("t3", "t1", d2, 10.0),
        _line("t4", "t2", d1, 10.0), _line("t5", "t2", d2, 10.0), _line("t6", "t2", d2, 10.0),
        _line("u1", "u", d1, 10.0, item="i404", category=None, quantity=3),
        _line("u1", "u", d1, 20.0, item="i2", category="食品"),
    ])
    tables = {"orders": orders, "items": pd.DataFrame({"item_id": ["i9"], "category": ["数码"]})}
    df = compute_features(tables, T).set_index("member_id")
    assert sorted(df.index) == ["r", "t1", "t2", "u"]
    r = df.loc["r"]
    assert r.orders_lifetime == 0 and r.n_refunds == 1 and math.isnan(r.spend_lifetime)
    assert math.isnan(r.refund_line_rate) and math.isnan(r.preferred_hour) and r.n_categories == 0
    for m, last, weekday in (("t1", 10.0, 3), ("t2", 0.0, 6)):  # 2022-12-01 is a Thursday, 2022-12-11 a Sunday
        x = df.loc[m]
        assert x.orders_lifetime == 3 and x.gap_mean_days == pytest.approx(5.0)
        assert x.gap_std_days == pytest.approx(np.std([0.0, 10.0], ddof=1)) and x.gap_last_days == pytest.approx(last)
        assert x.preferred_hour == 10 and x.preferred_weekday == weekday
    u = df.loc["u"]
    assert u.lines_per_order == 2 and u.items_per_order == 4 and u.avg_order_value == pytest.approx(30.0)
    assert u.n_categories == 1 and u.top_category == "食品" and u.top_category_share == pytest.approx(1.0)
    assert u.category_entropy == pytest.approx(0.0)
