"""Timing metrics: Harrell's C against a brute-force reference (with censoring and ties), the bootstrap's paired
replicates, status at d (censored-before-d members left out), and the integrated Brier score."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.timing.baselines import CurvePrediction, median_from_cdf
from training.timing.evaluate import (auc_at, brier_at, compare_curves, concordance_bootstrap, integrated_brier,
                                      restricted_mean, status_at)


def brute_cindex(t, e, r):
    num = den = 0.0
    for i in range(len(t)):
        if not e[i]:
            continue
        for j in range(len(t)):
            if t[i] < t[j]:
                den += 1
                num += 1.0 if r[i] > r[j] else 0.5 if r[i] == r[j] else 0.0
    return num / den


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.booleans(), st.integers(0, 5)), min_size=2, max_size=25))
def test_cindex_matches_brute_force(rows):
    t = np.array([r[0] for r in rows], float)
    e = np.array([r[1] for r in rows])
    r = np.array([r[2] for r in rows], float)
    got = concordance_bootstrap(t, e, {"m": r}, block=4)["m"][0]
    want = brute_cindex(t, e, r) if any(e[i] and (t[i] < t).any() for i in range(len(t))) else float("nan")
    assert got == pytest.approx(want, nan_ok=True)


def test_bootstrap_replicates_are_resamples():
    rng = np.random.default_rng(1)
    t = rng.exponential(10, 300)
    e = rng.random(300) < 0.8
    r = -t + rng.normal(0, 5, 300)
    out = concordance_bootstrap(t, e, {"good": r, "noise": rng.normal(size=300)}, n_boot=50, seed=3)
    assert out["good"].shape == (51,)
    assert 0.7 < out["good"][0] < 1 and abs(out["noise"][0] - 0.5) < 0.1
    assert np.all(out["good"][1:] > out["noise"][1:])  # paired: the same resample for both


def test_status_at_leaves_out_members_censored_before_d():
    t = np.array([3.0, 20.0, 10.0, 40.0])
    e = np.array([True, True, False, False])
    known, y = status_at(t, e, 14)
    assert known.tolist() == [True, True, False, True] and y.tolist() == [True, False, False, False]
    p = np.array([0.9, 0.2, 0.99, 0.1])
    assert brier_at(t, e, p, 14) == pytest.approx(np.mean([0.01, 0.04, 0.01]))
    assert auc_at(t, e, p, 14) == 1.0


def test_integrated_brier_of_a_perfect_step_is_zero():
    t = np.array([2.5, 7.5, 30.0])
    e = np.array([True, True, False])
    days = np.arange(1, 31)
    cdf = (t[:, None] < days[None, :]) & e[:, None]
    assert integrated_brier(t, e, cdf.astype(float)) == 0.0
    assert integrated_brier(t, e, np.full((3, 30), 0.5)) == pytest.approx(0.25)


def test_restricted_mean_and_median_from_cdf():
    cdf = np.array([[0.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    assert restricted_mean(cdf).tolist() == [3.0, 1.0]
    assert median_from_cdf(np.array([[0.2, 0.4, 0.6, 0.8]]), [1, 2, 3, 4], 99)[0] == pytest.approx(2.5)
    assert median_from_cdf(np.array([[0.1, 0.2]]), [1, 2], 99)[0] == 99


def test_compare_curves_reports_gain_intervals_for_every_baseline():
    rng = np.random.default_rng(0)
    n, h = 400, 30
    rate = rng.gamma(2, 0.05, n)
    t_true = rng.exponential(1 / rate)
    t = np.minimum(t_true, h)
    e = t_true < h
    days = np.arange(1, h + 1)
    truth = CurvePrediction("model", 1 - np.exp(-rate[:, None] * days[None, :]), np.log(2) / rate)
    flat = CurvePrediction("flat", np.tile(1 - np.exp(-rate.mean() * days), (n, 1)),
                           np.full(n, np.log(2) / rate.mean()))
    res = compare_curves(t, e, truth, [flat], n_boot=100)
    assert set(res["metrics"]) == {"model", "flat"}
    assert res["metrics"]["model"]["c_index"] > 0.6 and res["metrics"]["flat"]["c_index"] == pytest.approx(0.5)
    lo, hi = res["gain_ci95"]["flat"]["c_index"]
    assert 0 < lo < hi
    assert res["gain_ci95"]["flat"]["auc_14d"][0] > 0
