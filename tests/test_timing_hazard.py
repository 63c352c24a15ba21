"""Discrete-time hazard machinery: person-period expansion against a slow reference, monotone CDFs, the closed forms
for a constant hazard, and censoring (a censored member never contributes a positive or an unobserved bin)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.member_pyfunc.timing_hazard import (cdf_at, expand_person_period, expected_days, median_days,
                                                  person_period_matrix, pp_feature_names, role_indices,
                                                  survival_at_edges, validate_edges)

EDGES = [0, 1, 2, 3, 5, 7, 14, 30, 60]


def reference_expand(durations, events, edges):
    """Obviously-correct loop: bins fully observed, plus the event bin."""
    rows = []
    for i, (t, e) in enumerate(zip(durations, events)):
        for k in range(len(edges) - 1):
            lo, hi = edges[k], edges[k + 1]
            if e and t < edges[-1] and lo <= t < hi:
                rows.append((i, k, 1))
                break
            if hi <= t:
                rows.append((i, k, 0))
            else:
                break
    return rows


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 80, allow_nan=False), st.booleans()), min_size=1, max_size=30))
def test_expansion_matches_reference(members):
    t = np.array([m[0] for m in members])
    e = np.array([m[1] for m in members])
    member, k, y = expand_person_period(t, e, EDGES)
    assert list(zip(member.tolist(), k.tolist(), y.tolist())) == reference_expand(t, e, EDGES)


def test_censored_members_contribute_only_observed_bins():
    member, k, y = expand_person_period(np.array([10.0, 60.0, 4.0]), np.array([False, False, True]), EDGES)
    assert y[member == 0].sum() == 0 and y[member == 1].sum() == 0
    # censored at day 10: bins [0,1) … [5,7) are fully observed, [7,14) is not
    assert k[member == 0].tolist() == [0, 1, 2, 3, 4]
    assert k[member == 1].tolist() == list(range(len(EDGES) - 1))
    # event on day 4 sits in bin [3,5): target 1 there, 0 before, nothing after
    assert k[member == 2].tolist() == [0, 1, 2, 3] and y[member == 2].tolist() == [0, 0, 0, 1]


def test_event_at_or_after_horizon_is_censored():
    _, _, y = expand_person_period(np.array([60.0, 75.0]), np.array([True, True]), EDGES)
    assert y.sum() == 0


@pytest.mark.parametrize("bad", [[1, 2], [0], [0, 5, 5], [0, 3, 2]])
def test_bad_edges_rejected(bad):
    with pytest.raises(ValueError, match="bin edges"):
        validate_edges(bad)


def test_negative_durations_rejected():
    with pytest.raises(ValueError, match="durations"):
        expand_person_period(np.array([-1.0]), np.array([True]), EDGES)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 0.999), min_size=len(EDGES) - 1, max_size=len(EDGES) - 1))
def test_cdf_is_monotone_and_bounded(h):
    hz = np.array([h])
    days = np.linspace(0, 120, 241)
    c = cdf_at(hz, EDGES, days)[0]
    assert np.all(np.diff(c) >= -1e-12)
    assert c[0] == pytest.approx(0.0) and np.all((c >= 0) & (c <= 1))
    # at the edges the interpolated CDF equals 1 − Π(1 − h)
    s = survival_at_edges(hz)[0]
    assert cdf_at(hz, EDGES, EDGES)[0] == pytest.approx(1 - s, abs=1e-12)


def test_constant_hazard_matches_exponential_closed_forms():
    lam = 0.05  # per day
    widths = np.diff(EDGES)
    h = 1 - np.exp(-lam * widths)[None, :]
    days = np.array([0.5, 7, 20, 45, 90, 200])
    assert cdf_at(h, EDGES, days)[0] == pytest.approx(1 - np.exp(-lam * days), rel=1e-9)
    assert median_days(h, EDGES, 730)[0] == pytest.approx(np.log(2) / lam, rel=1e-9)
    truncated_mean = (1 - np.exp(-lam * 730)) / lam
    assert expected_days(h, EDGES, 730)[0] == pytest.approx(truncated_mean, rel=1e-9)


def test_median_capped_and_zero_hazard_safe():
    h = np.zeros((1, len(EDGES) - 1))
    assert median_days(h, EDGES, 365)[0] == 365
    assert expected_days(h, EDGES, 365)[0] == pytest.approx(365)


def test_person_period_matrix_adds_bin_rate_and_elapsed_columns():
    cols = ["recency_days", "gap_mean_days", "orders_lifetime", "days_since_first_order", "other"]
    x = np.array([[5.0, 10.0, 4.0, 39.0, 1.0], [2.0, 0.0, 1.0, 2.0, 3.0]])
    member = np.array([0, 0, 1])
    k = np.array([0, 1, 5])
    idx = role_indices(cols)
    assert idx == {"recency": 0, "gap": 1, "orders": 2, "tenure": 3}
    m = person_period_matrix(x, member, k, EDGES, idx)
    names = pp_feature_names(cols, idx)
    assert m.shape == (3, len(names)) and "pp_rate_365d" not in names  # no orders_365d column: no such rate
    row = dict(zip(names, m[1]))
    assert row["pp_bin_start"] == 1 and row["pp_bin_width"] == 1
    assert row["pp_rate_lifetime"] == pytest.approx(4 / 40) and row["pp_recency_over_tenure"] == pytest.approx(5 / 40)
    assert row["pp_elapsed_days"] == pytest.approx(5 + 1 + 0.5)
    assert row["pp_elapsed_over_gap"] == pytest.approx(6.5 / 10)
    assert np.isnan(dict(zip(names, m[2]))["pp_elapsed_over_gap"])  # gap 0: unknown, not infinite
    # without known roles only the bin columns are added
    assert person_period_matrix(x, member, k, EDGES).shape == (3, len(cols) + 2)
