"""The recs history summary of one inline history (serving.recs_history.summarise_one) equals the model's own
`summarise_history` frame exactly (values, dtypes, row order) on generated histories, and the start-up check turns
the fast path off for a model whose function differs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.contract import EVENTS, ORDERS, conform
from serving.recs_history import FastSummary, probe_histories, summarise_one
from training.member_pyfunc.recs import summarise_history

AS_OF = pd.Timestamp("2025-06-01 12:00")
ITEMS = ["i07", "i02", "i11", "i05", "i03"]


def _equal(o: pd.DataFrame, e: pd.DataFrame | None, t: pd.Timestamp) -> bool:
    """True when the fast path answered (and then it must equal the reference), False when it declined."""
    got = summarise_one(o, e, t)
    if got is None:
        return False
    pd.testing.assert_frame_equal(got, summarise_history(o, e, t), check_exact=True)
    return True


def test_probe_histories_are_reproduced_exactly() -> None:
    for o, e, t in probe_histories():
        assert _equal(o, e, t)


@st.composite
def histories(draw):  # noqa: ANN001, ANN201
    n = draw(st.integers(1, 25))
    minutes = draw(st.lists(st.integers(-400 * 24 * 60, 60), min_size=n, max_size=n))
    grouped = draw(st.booleans())  # rows grouped by item (pandas then sums by reduceat, else by its Kahan kernel)
    orders = pd.DataFrame({
        "order_id": [f"o{draw(st.integers(0, max(1, n // 2)))}" for _ in range(n)],
        "member_id": "m1",
        "ordered_at": [AS_OF + pd.Timedelta(minutes=m) for m in minutes],
        "amount": [draw(st.one_of(st.floats(0, 5000, allow_nan=False).map(lambda x: round(x, 2)),
                                  st.just(np.nan))) for _ in range(n)],
        "item_id": [draw(st.one_of(st.sampled_from(ITEMS), st.none())) for _ in range(n)],
        "status": [draw(st.sampled_from(["paid", "paid", "paid", "refunded", "cancelled"])) for _ in range(n)],
    })
    if draw(st.booleans()):
        orders["amount"] = orders["amount"].fillna(9.99)
    if grouped:
        orders = orders.sort_values("item_id", kind="stable")
    k = draw(st.integers(0, 30))
    events = pd.DataFrame({
        "member_id": "m1",
        "occurred_at": [AS_OF + pd.Timedelta(minutes=draw(st.integers(-60 * 24 * 60, 30))) for _ in range(k)],
        "type": [draw(st.sampled_from(["view", "cart", "favorite", "checkin", "login"])) for _ in range(k)],
        "item_id": [draw(st.one_of(st.sampled_from(ITEMS + ["x9"]), st.none())) for _ in range(k)],
    })
    if draw(st.booleans()):
        events = events.sort_values("item_id", kind="stable")
    return conform(orders, ORDERS), (conform(events, EVENTS) if k or draw(st.booleans()) else None)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_generated_histories_equal_the_reference(h) -> None:  # noqa: ANN001
    o, e = h
    _equal(o, e, AS_OF)


def test_the_fast_path_answers_typical_histories() -> None:
    """Not a vacuous pass: on realistic one-member histories the fast path answers (it may decline only odd ones)."""
    rng = np.random.default_rng(3)
    answered = 0
    for _ in range(30):
        n = int(rng.integers(5, 80))
        o = conform(pd.DataFrame({
            "order_id": [f"o{j // 2}" for j in range(n)], "member_id": "m7",
            "ordered_at": AS_OF - pd.to_timedelta(np.sort(rng.integers(1, 500 * 86400, n))[::-1], unit="s"),
            "amount": rng.gamma(2.0, 50.0, n).round(2), "item_id": rng.choice(ITEMS, n),
            "status": rng.choice(["paid"] * 9 + ["refunded"], n)}), ORDERS)
        k = int(rng.integers(1, 100))
        e = conform(pd.DataFrame({
            "member_id": "m7", "occurred_at": AS_OF - pd.to_timedelta(rng.integers(1, 90 * 86400, k), unit="s"),
            "type": rng.choice(["view", "cart", "favorite", "checkin"], k), "item_id": rng.choice(ITEMS, k)}), EVENTS)
        answered += _equal(o, e, AS_OF)
    assert answered == 30


def test_start_up_check_follows_the_model() -> None:
    fs = FastSummary.for_model(summarise_history)
    assert fs.columns is not None and "n_bought_hl14" in fs.columns

    def older(orders, events, as_of=None):  # noqa: ANN001, ANN202 - a model logged before the decayed counts
        return summarise_history(orders, events, as_of).drop(columns=["n_bought_hl14", "n_bought_hl56",
                                                                      "n_view_hl1", "n_cart_hl1"])

    fs_old = FastSummary.for_model(older)
    o, e, t = probe_histories()[0]
    assert fs_old.columns is not None and "n_bought_hl14" not in fs_old.columns
    pd.testing.assert_frame_equal(fs_old(o, e, t), older(o, e, t), check_exact=True)

    calls = []

    def different(orders, events, as_of=None):  # noqa: ANN001, ANN202 - a model whose summary means something else
        calls.append(1)
        out = summarise_history(orders, events, as_of)
        return out.assign(spend=out["spend"] * 2)

    fs_diff = FastSummary.for_model(different)
    assert fs_diff.columns is None  # fast path off: every request uses the model's own function
    calls.clear()
    pd.testing.assert_frame_equal(fs_diff(o, e, t), different(o, e, t), check_exact=True)
    assert len(calls) == 2


@pytest.mark.parametrize("case", ["two members", "object ids", "too many rows"])
def test_inputs_outside_the_fast_path_are_declined(case: str) -> None:
    o, e, t = probe_histories()[0]
    if case == "two members":
        e = e.assign(member_id=pd.array(["p2"] * len(e), dtype="string"))
    elif case == "object ids":
        o = o.assign(item_id=o["item_id"].astype(object))
    if case == "too many rows":
        assert summarise_one(o, e, t, max_rows=5) is None
    else:
        assert summarise_one(o, e, t) is None
    # and the wrapper still answers, through the reference
    fs = FastSummary.for_model(summarise_history)
    pd.testing.assert_frame_equal(fs(o, e, t), summarise_history(o, e, t), check_exact=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories(), st.sampled_from([1, 30, 365]))
def test_generated_histories_equal_the_windowed_reference(h, window_days: int) -> None:  # noqa: ANN001
    """With a window (the inline path keeps the 365 days training and the online table use), the fast summary
    equals `summarise_history(..., window_days=…)`: rows before as_of − window are left out on both sides."""
    o, e = h
    got = summarise_one(o, e, AS_OF, window_days=window_days)
    if got is not None:
        pd.testing.assert_frame_equal(got, summarise_history(o, e, AS_OF, window_days=window_days), check_exact=True)
