"""Replenishment cycles: exact on regular histories, point-in-time, robust to top-ups, item flags and detection,
the reminder audience, the held-out backtest and the error against a synthetic store's true cycles."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.member_pyfunc.replenishment import CYCLE_COLUMNS, ReplenishmentParams
from training.timing.replenishment import (cycle_error_vs_truth, due_within, estimate_cycles, member_summary,
                                           replenishment_backtest)

T0 = pd.Timestamp("2024-01-01")


def history(member: str, category: str, cycle: float, n: int, start: pd.Timestamp = T0, lines: int = 1,
            jitter: float = 0.0, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows, t = [], start
    for _ in range(n):
        for j in range(lines):
            rows.append({"member_id": member, "category": category, "status": "paid",
                         "ordered_at": t + pd.Timedelta(hours=j)})
        t = t + pd.Timedelta(days=cycle * (1 + jitter * rng.standard_normal()))
    return rows


def test_regular_cycle_is_exact_and_due_date_follows():
    orders = pd.DataFrame(history("a", "洗发水", 90, 5, lines=3) + history("a", "牛奶", 7, 20))
    as_of = T0 + pd.Timedelta(days=400)
    c = estimate_cycles(orders, as_of)
    assert list(c.columns) == list(CYCLE_COLUMNS)
    shampoo = c[c["category"] == "洗发水"].iloc[0]
    assert shampoo["n_purchases"] == 5 and shampoo["cycle_days"] == 90 and shampoo["spread_days"] == 0
    assert shampoo["due_at"] == T0 + pd.Timedelta(days=450)
    # "buys shampoo every three months → remind at two months"
    assert shampoo["remind_at"] == T0 + pd.Timedelta(days=360 + 60)
    assert shampoo["days_until_due"] == 50
    milk = c[c["category"] == "牛奶"].iloc[0]
    assert milk["lapsed"] and not milk["reminder"]  # overdue by far more than a cycle


def test_fewer_than_min_purchases_and_other_statuses_ignored():
    rows = history("a", "x", 10, 2) + history("b", "x", 10, 5)
    rows += [{**r, "status": "refunded"} for r in history("c", "x", 10, 5)]
    c = estimate_cycles(pd.DataFrame(rows), T0 + pd.Timedelta(days=100))
    assert c["member_id"].tolist() == ["b"]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2), st.floats(0, 300, allow_nan=False)),
                min_size=1, max_size=60), st.floats(20, 280))
def test_rows_at_or_after_as_of_never_matter(rows, cut):
    df = pd.DataFrame([{"member_id": f"m{m}", "category": f"c{c}", "status": "paid",
                        "ordered_at": T0 + pd.Timedelta(days=d)} for m, c, d in rows])
    as_of = T0 + pd.Timedelta(days=cut)
    before = df[df["ordered_at"] < as_of]
    future = df[df["ordered_at"] >= as_of].assign(ordered_at=lambda f: f["ordered_at"] + pd.Timedelta(days=3))
    a = estimate_cycles(df, as_of)
    b = estimate_cycles(pd.concat([before, future, future]), as_of)  # changed, duplicated future rows
    pd.testing.assert_frame_equal(a, b)


def test_topups_do_not_halve_the_cycle():
    rows = history("a", "x", 30, 10)
    # an extra purchase 4 days after three of the regular ones
    rows += [{**rows[i], "ordered_at": rows[i]["ordered_at"] + pd.Timedelta(days=4)} for i in (2, 5, 7)]
    as_of = T0 + pd.Timedelta(days=400)
    c = estimate_cycles(pd.DataFrame(rows), as_of)
    assert c["cycle_days"].iloc[0] == pytest.approx(30)
    naive = estimate_cycles(pd.DataFrame(rows), as_of, params={"topup_fraction": 0.0})
    assert naive["cycle_days"].iloc[0] < 30


def test_item_flags_decide_consumable_and_category_from_items():
    items = pd.DataFrame({"item_id": ["s1", "t1"], "category": ["shampoo", "tv"], "is_consumable": [True, False]})
    rows = [{**r, "item_id": "s1", "category": None} for r in history("a", "?", 30, 5)]
    rows += [{**r, "item_id": "t1", "category": None} for r in history("a", "?", 30, 5, seed=1)]
    orders = pd.DataFrame(rows)
    as_of = T0 + pd.Timedelta(days=140)
    c = estimate_cycles(orders, as_of, items=items).set_index("category")
    assert bool(c.loc["shampoo", "is_consumable"]) and not bool(c.loc["tv", "is_consumable"])
    assert bool(c.loc["shampoo", "reminder"]) and not bool(c.loc["tv", "reminder"])


def test_regular_categories_detected_without_item_flags():
    rows = []
    for i in range(6):
        rows += history(f"m{i}", "regular", 20, 6, jitter=0.05, seed=i)
        days = np.cumsum(np.random.default_rng(i).exponential(25, 10))  # memoryless: no cycle at all
        rows += [{"member_id": f"m{i}", "category": "random", "status": "paid",
                  "ordered_at": T0 + pd.Timedelta(days=float(d))} for d in days]
    c = estimate_cycles(pd.DataFrame(rows), T0 + pd.Timedelta(days=400),
                        params={"category_min_pairs": 5})
    reg = c.groupby("category")["category_regular"].first()
    assert bool(reg["regular"]) and not bool(reg["random"])
    assert c["is_consumable"].isna().all()


def test_due_within_and_member_summary():
    rows = history("a", "x", 30, 4) + history("b", "x", 30, 4, start=T0 + pd.Timedelta(days=20))
    c = estimate_cycles(pd.DataFrame(rows), T0 + pd.Timedelta(days=115),
                        params={"category_min_pairs": 1})
    due = due_within(c, 7)
    assert due["member_id"].tolist() == ["a"]  # a is due on day 120, b on day 140
    s = member_summary(c)
    assert s.set_index("member_id").loc["b", "next_due_at"] == T0 + pd.Timedelta(days=140)
    with pytest.raises(ValueError, match="positive"):
        due_within(c, 0)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="ordered_at"):
        estimate_cycles(pd.DataFrame({"member_id": ["a"]}), T0)
    with pytest.raises(ValueError, match="category"):
        estimate_cycles(pd.DataFrame({"member_id": ["a"], "ordered_at": [T0]}), T0)
    with pytest.raises(ValueError, match="min_purchases"):
        ReplenishmentParams(min_purchases=1)
    with pytest.raises(ValueError, match="unknown"):
        ReplenishmentParams.from_any({"cycle": 3})


def test_backtest_hits_regular_buyers():
    rows = []
    for i in range(20):
        rows += history(f"m{i}", "milk", 10, 40, start=T0 + pd.Timedelta(days=i % 10), jitter=0.03, seed=i)
    orders = pd.DataFrame(rows)
    r = replenishment_backtest(orders, T0 + pd.Timedelta(days=300), horizon=60,
                               params={"category_min_pairs": 5})
    assert r["split"]["due_pairs"] > 0
    assert r["model"]["hit_rate_14d"] > 0.9
    assert r["model"]["due_mae_days"] < 3


def test_cycle_error_against_truth():
    rows = history("a", "x", 30, 6) + history("b", "x", 10, 3)
    c = estimate_cycles(pd.DataFrame(rows), T0 + pd.Timedelta(days=400))
    truth = pd.DataFrame({"member_id": ["a", "b"], "category": ["x", "x"], "cycle_days": [33.0, 10.0]})
    e = cycle_error_vs_truth(c, truth)
    assert e["pairs"] == 1 and e["median_rel_error"] == pytest.approx(3 / 33)
