"""Reason phrases: members without a purchase gap, and the same text for a member alone or in any batch."""
from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from training.member_pyfunc.reasons import fmt_value, top_reasons

COLS = ["recency_over_gap", "recency_days", "gap_mean_days", "avg_order_value", "discount_rate", "top_category",
        "bgnbd_p_alive"]


def test_no_gap_reads_as_plain_recency_not_unknown():
    frame = pd.DataFrame({"recency_over_gap": [np.nan, 2.46, np.nan], "recency_days": [40.0, 50.0, np.nan],
                          "gap_mean_days": [np.nan, 20.3, np.nan]})
    contrib = np.array([[1.0, 0.0, 0.0, 0.0]] * 3)
    (r,) = top_reasons(contrib, frame, list(frame.columns), 1, x=frame.to_numpy())
    assert list(r) == ["40 days since last order, only one order so far",
                       "2.5× the usual time between orders has passed (50 days vs usual 20)",
                       "no paid order yet"]
    (alone,) = top_reasons(contrib[:1], frame[["recency_over_gap"]], ["recency_over_gap"], 1)
    assert alone[0] == "only one order so far, no usual gap yet"
    assert not any("unknown" in s for s in r)


def test_values_are_formatted_by_themselves():
    assert [fmt_value(v) for v in (3.0, 2.5, 1234.0, np.nan, None, "食品", np.int64(7))] == \
        ["3", "2.50", "1,234", "unknown", "unknown", "食品", "7"]


row = st.fixed_dictionaries({
    "recency_over_gap": st.one_of(st.just(np.nan), st.floats(0, 20)),
    "recency_days": st.one_of(st.just(np.nan), st.floats(0, 400)),
    "gap_mean_days": st.one_of(st.just(np.nan), st.floats(0.5, 100)),
    "avg_order_value": st.one_of(st.just(np.nan), st.integers(0, 500).map(float), st.floats(0, 500)),
    "discount_rate": st.one_of(st.just(np.nan), st.floats(0, 1)),
    "top_category": st.sampled_from(["食品", "家居", None]),
    "bgnbd_p_alive": st.one_of(st.just(np.nan), st.floats(0, 1)),
})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(row, min_size=1, max_size=12), seed=st.integers(0, 2**16))
def test_same_member_same_text_alone_or_in_a_batch(rows, seed):
    frame = pd.DataFrame(rows, columns=COLS)
    frame["top_category"] = frame["top_category"].astype("string")
    contrib = np.random.default_rng(seed).normal(size=(len(frame), len(COLS) + 1))
    x = frame.drop(columns="top_category").reindex(columns=COLS).to_numpy(dtype=float, na_value=np.nan)
    batch = top_reasons(contrib, frame, COLS, 3, x=x)
    for i in range(len(frame)):
        alone = top_reasons(contrib[i:i + 1], frame.iloc[i:i + 1], COLS, 3, x=x[i:i + 1])
        assert [a[0] for a in alone] == [b[i] for b in batch]
    assert not any("unknown×" in s for b in batch for s in b)


def test_bgnbd_reasons_say_the_horizon_and_a_percentage():
    from training.member_pyfunc.reasons import templates_for

    frame = pd.DataFrame({"bgnbd_expected_purchases": [0.27, np.nan], "bgnbd_p_alive": [0.35, np.nan]})
    cols = list(frame.columns)
    r1, r2 = top_reasons(np.array([[2.0, 1.0, 0.0]] * 2), frame, cols, 2, templates_for(cols, 60))
    assert list(r1) == ["about 0.3 orders expected in the next 60 days at this member's usual pace",
                        "no order pattern yet"]
    assert r2[0] == "35% chance of still being an active customer, judging by the order pattern"
