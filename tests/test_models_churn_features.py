"""Model-side BG/NBD features (training.member_pyfunc.bgnbd) and the denser stacked cutoffs of the backtest."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from training import backtest, churn, ltv
from training.member_pyfunc.bgnbd import COLUMNS, BgNbd, input_columns
from training.member_pyfunc.churn import ChurnModel
from training.member_pyfunc.ltv import LtvModel

from tests.fixtures_models import make_model_store
from tests.test_models_pyfunc import FAST, member_frame

TRUE = dict(r=0.8, alpha=20.0, a=0.7, b=3.0)


def simulate_bgnbd(n: int, seed: int, age: float = 200.0, horizon: float = 60.0) -> tuple[pd.DataFrame, np.ndarray]:
    """Members following the BG/NBD story (rate λ ~ Gamma(r, α), dropout after each purchase with p ~ Beta(a, b)),
    all with a first order `age` days before the cutoff: their RFM feature columns and orders in the next `horizon`.
    """
    rng = np.random.default_rng(seed)
    lam = rng.gamma(TRUE["r"], 1 / TRUE["alpha"], n)
    p = rng.beta(TRUE["a"], TRUE["b"], n)
    n_before, last, n_after = np.zeros(n), np.zeros(n), np.zeros(n)
    t, alive = np.zeros(n), np.ones(n, bool)
    while alive.any():  # one purchase step for every living member per pass (vectorised over members)
        t = np.where(alive, t + rng.exponential(1 / lam), t)
        alive &= t < age + horizon
        before = alive & (t < age)
        n_before += before
        last = np.where(before, t, last)
        n_after += alive & (t >= age)
        alive &= rng.random(n) >= p  # drops out after this purchase
    frame = pd.DataFrame({"orders_lifetime": n_before + 1, "days_since_first_order": np.full(n, age),
                          "recency_days": age - last, "avg_order_value": rng.gamma(5, 10, n)})
    return frame, n_after


def test_bgnbd_fit_recovers_parameters_and_predicts_future_orders():
    frame, future = simulate_bgnbd(6000, 1)
    m = BgNbd.fit(frame, horizon_days=60)
    assert m.r == pytest.approx(TRUE["r"], rel=0.25) and m.alpha == pytest.approx(TRUE["alpha"], rel=0.35)
    assert m.a == pytest.approx(TRUE["a"], rel=0.5) and m.b == pytest.approx(TRUE["b"], rel=0.6)
    d = m.transform(frame)
    e = d["bgnbd_expected_purchases"]
    assert np.isfinite(e).all() and (e >= 0).all()
    assert e.mean() == pytest.approx(future.mean(), rel=0.1)  # conditional expectations are calibrated
    assert np.corrcoef(e, future)[0, 1] > 0.5
    assert ((d["bgnbd_p_alive"] > 0) & (d["bgnbd_p_alive"] <= 1)).all()
    np.testing.assert_allclose(d["bgnbd_expected_spend"], e * frame["avg_order_value"])


def test_bgnbd_members_without_orders_get_missing_and_bad_input_is_named(tmp_path):
    frame, _ = simulate_bgnbd(500, 2)
    m = BgNbd.fit(frame, 30)
    odd = pd.DataFrame({"orders_lifetime": [0.0, np.nan, 3.0], "days_since_first_order": [np.nan, np.nan, 90.0],
                        "recency_days": [np.nan, np.nan, 5.0]})
    d = m.transform(odd)
    assert np.isnan(d["bgnbd_expected_purchases"][:2]).all() and np.isfinite(d["bgnbd_expected_purchases"][2])
    assert "bgnbd_expected_spend" not in d  # no average order value in the frame
    assert BgNbd.load(m.save(tmp_path / "p.json")) == m
    with pytest.raises(ValueError, match="recency_days"):
        m.transform(odd.drop(columns=["recency_days"]))
    with pytest.raises(ValueError, match="at least 10"):
        BgNbd.fit(odd, 30)
    assert input_columns(["recency_days", *COLUMNS, "x"], m) == ["recency_days", "x", "orders_lifetime",
                                                                 "days_since_first_order", "avg_order_value"]
    assert input_columns(["a"], None) == ["a"]


def rfm_frame(n: int, seed: int) -> pd.DataFrame:
    """The pyfunc tests' feature rows plus the RFM columns the BG/NBD features are made from."""
    f = member_frame(n, seed)
    rng = np.random.default_rng(seed + 100)
    f["days_since_first_order"] = f["recency_days"] + rng.uniform(0, 300, n)
    f["orders_lifetime"] = f["orders_90d"] + 1 + rng.poisson(2, n)
    f["avg_order_value"] = rng.gamma(4, 20, n)
    return f


@pytest.mark.parametrize("kind", ["churn", "ltv"])
def test_models_compute_bgnbd_features_themselves(kind, tmp_path):
    train, valid, test = rfm_frame(1500, 1), rfm_frame(600, 2), rfm_frame(300, 3)
    if kind == "churn":
        model, info = churn.fit(train, valid, churn.ChurnConfig(**FAST))
        out = lambda m, f: m.predict(None, f)["churn_probability"].to_numpy()  # noqa: E731
        fresh = ChurnModel()
    else:
        model, info = ltv.fit(train, valid, ltv.LtvConfig(kind="tweedie", **FAST))
        out = lambda m, f: m.predict(None, f)["ltv"].to_numpy()  # noqa: E731
        fresh = LtvModel()
    assert model.derived is not None and info["bgnbd_r"] > 0
    assert set(COLUMNS) <= set(model.spec.columns) and not set(COLUMNS) & set(model.input_columns)
    served = test[["member_id", *model.input_columns]]  # what serving passes: no derived columns
    expected = out(model, served)
    assert np.isfinite(expected).all()
    np.testing.assert_allclose(out(model, test), expected)  # extra columns are ignored
    np.testing.assert_allclose(out(model, served.head(3)), expected[:3])  # the small-batch path agrees
    fresh.load_context(SimpleNamespace(artifacts=model.save_artifacts(tmp_path / "a")))
    assert fresh.derived == model.derived
    np.testing.assert_allclose(out(fresh, served), expected)


def test_bgnbd_features_can_be_switched_off():
    model, info = churn.fit(rfm_frame(800, 4), rfm_frame(400, 5), churn.ChurnConfig(**FAST, bgnbd_features=False))
    assert model.derived is None and info["bgnbd_features"] == "off"
    assert not set(COLUMNS) & set(model.spec.columns)
    model, info = churn.fit(member_frame(800, 4), member_frame(400, 5), churn.ChurnConfig(**FAST))
    assert model.derived is None and "lacks" in info["bgnbd_features"]  # no RFM inputs: left out, and said why


def test_denser_cutoffs_stay_before_the_validation_window(tmp_path):
    store = make_model_store(tmp_path / "s", n_members=60, days=425)
    monthly = backtest.plan(store, "2023-12-01", 60)
    dense = backtest.plan(store, "2023-12-01", 60, 24, 14)
    assert dense.validation == monthly.validation
    gaps = {(b - a).days for a, b in zip(dense.train, dense.train[1:])}
    assert gaps == {14} and len(dense.train) > len(monthly.train)
    assert dense.train[-1] + pd.Timedelta(days=60) == dense.validation  # the latest label window ends at V
    first = backtest.data_span(store)[0] + pd.Timedelta(days=backtest.MIN_HISTORY_DAYS)
    assert dense.train[0] >= first
    assert backtest.plan(store, "2023-12-01", 60, 3, 14).train == dense.train[-3:]
    with pytest.raises(ValueError, match="every_days"):
        backtest.plan(store, "2023-12-01", 60, 24, 0)
