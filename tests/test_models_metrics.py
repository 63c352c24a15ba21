"""training.metrics against scikit-learn / scipy and hand-computed values; the paired bootstrap; evaluation table."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from training import metrics as M
from training.evaluation import compare


@pytest.fixture()
def binary() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    y = (rng.random(500) < 0.2).astype(float)
    p = np.clip(np.round(0.2 + 0.3 * (y - 0.2) + rng.normal(0, 0.2, 500), 2), 0.01, 0.99)  # plenty of ties
    return y, p


def test_classification_metrics_match_sklearn(binary):
    y, p = binary
    assert M.auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert M.pr_auc(y, p) == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert M.brier(y, p) == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    assert M.log_loss(y, p) == pytest.approx(log_loss(y, p), abs=1e-9)


def test_lift_and_capture_by_hand():
    y = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 1], float)
    p = np.arange(10, 0, -1, dtype=float)  # first row scored highest
    assert M.lift_top_decile(y, p) == pytest.approx(1.0 / 0.2)  # top 10% = row 0 (a churner) vs base rate 0.2
    v = np.array([50, 10, 10, 10, 5, 5, 5, 3, 1, 1], float)
    assert M.top_decile_capture(v, p) == pytest.approx(50 / 100)
    # a tie at the boundary shares the slot: two rows tied for the top decile each count one half
    assert M.top_decile_capture(v, np.r_[5.0, 5.0, np.zeros(8)]) == pytest.approx((50 + 10) / 2 / 100)


def test_gini_by_hand_and_against_auc(binary):
    y, p = binary
    assert M.gini(y, p) == pytest.approx(2 * roc_auc_score(y, p) - 1, abs=1e-9)  # 0/1 target: Gini = 2·AUC − 1
    v = np.array([0, 0, 10, 40], float)
    assert M.gini(v, v) == pytest.approx(1.0)
    assert M.gini(v, -v) == pytest.approx(-1.0)
    assert M.gini(v, np.zeros(4)) == pytest.approx(0.0)  # one big tie = random order on average
    assert np.isnan(M.gini(np.full(5, 3.0), np.arange(5.0)))  # constant target: nothing to rank
    # hand: order by p = [40, 0, 10, 0] → cumulative share 0.8, 0.8, 1.0, 1.0 at n/4 steps
    lorenz = np.trapezoid([0, 0.8, 0.8, 1.0, 1.0], dx=0.25)
    perfect = np.trapezoid([0, 0.8, 1.0, 1.0, 1.0], dx=0.25)
    assert M.gini(v, np.array([1, 3, 2, 4.0])) == pytest.approx((lorenz - 0.5) / (perfect - 0.5))


def test_spearman_mae_decile_table():
    rng = np.random.default_rng(2)
    y, p = rng.gamma(1, 10, 200), rng.gamma(1, 10, 200)
    assert M.spearman(y, p) == pytest.approx(spearmanr(y, p).statistic)
    assert M.mae(y, p) == pytest.approx(np.mean(np.abs(y - p)))
    t = M.decile_table(y, y)
    assert list(t["decile"]) == list(range(1, 11)) and t["members"].sum() == 200
    assert t["predicted"].is_monotonic_decreasing and np.allclose(t["predicted"], t["actual"])
    assert M.decile_calibration_error(y, y) == 0.0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 1000, allow_nan=False), min_size=5, max_size=60),
       st.integers(0, 10_000))
def test_gini_and_auc_depend_only_on_the_ranking(values, seed):
    y = np.asarray(values)
    rng = np.random.default_rng(seed)
    p = rng.normal(size=len(y))
    if y.sum() > 0 and np.ptp(y) > 0:
        assert M.gini(y, p) == pytest.approx(M.gini(y, np.exp(p) * 3 + 1), abs=1e-9)
        assert -1 - 1e-9 <= M.gini(y, p) <= 1 + 1e-9
    yb = (y > np.median(y)).astype(float)
    if 0 < yb.sum() < len(yb):
        assert M.auc(yb, p) == pytest.approx(M.auc(yb, 2 * p - 5), abs=1e-12)


def test_paired_bootstrap_interval():
    rng = np.random.default_rng(3)
    y = (rng.random(800) < 0.3).astype(float)
    good = y + rng.normal(0, 0.6, 800)
    weak = y + rng.normal(0, 2.0, 800)
    lo, hi = M.paired_bootstrap_ci(M.auc, y, good, weak, n_boot=300)
    assert 0 < lo < M.auc(y, good) - M.auc(y, weak) < hi
    lo, hi = M.paired_bootstrap_ci(M.auc, y, good, good, n_boot=50)
    assert lo == hi == 0.0
    lo, hi = M.paired_bootstrap_ci(M.brier, y, np.clip(good, 0, 1), np.full(800, 0.3), n_boot=200,
                                   lower_is_better=True)
    assert lo > 0  # the sign is flipped for lower-is-better metrics: a positive gain means better


def test_compare_picks_best_baseline_and_skips_scale_metrics_for_rankings():
    rng = np.random.default_rng(4)
    y = (rng.random(400) < 0.3).astype(float)
    model = np.clip(0.3 + 0.5 * (y - 0.3) + rng.normal(0, 0.15, 400), 0.01, 0.99)
    ev = compare("churn", y, model, {"recency": y * 5 + rng.normal(0, 5, 400), "noise": rng.random(400)},
                 M.CLASSIFICATION, "auc", {"cutoff": "2024-01-01"}, scale_free_baselines=frozenset({"recency", "noise"}),
                 n_boot=100)
    assert ev.best_baseline == "recency"
    assert "brier" not in ev.baselines["recency"] and "auc" in ev.gain_ci95 and "brier" not in ev.gain_ci95
    out = ev.to_result()
    assert set(out) >= {"split", "model", "baselines", "gain_ci95"}
    assert [r["metric"] for r in ev.table_rows()] == list(M.CLASSIFICATION)


def test_without_pymc_marketing_the_rule_baselines_remain_and_the_note_says_why(monkeypatch):
    from types import SimpleNamespace

    import pandas as pd

    from training import baselines, churn

    monkeypatch.setattr(baselines, "has_pymc_marketing", lambda: False)
    notes: list[str] = []
    data = SimpleNamespace(test=pd.DataFrame({"member_id": ["a", "b"], "recency_days": [3.0, 90.0]}))
    scores = churn._baseline_scores(None, data, True, notes)
    assert list(scores) == ["recency"] and "[bench]" in notes[0]
