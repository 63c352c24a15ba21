"""BG/NBD model-side features (training/member_pyfunc/bgnbd.py): a bounded maximum-likelihood fit that stays finite
when the rows show no dropout (the degenerate case Online Retail's refit rows hit), and recovers known parameters."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.member_pyfunc.bgnbd import BOUNDS, BgNbd, _log_likelihood, _rfm


def _frame(x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray) -> pd.DataFrame:
    """The feature-frame columns BgNbd reads, from (repeat purchases, time of the last one, age) in days."""
    big_t = np.round(big_t)
    t_x = np.minimum(np.round(t_x), big_t)
    return pd.DataFrame({"orders_lifetime": x + 1.0, "days_since_first_order": big_t, "recency_days": big_t - t_x,
                         "avg_order_value": 20.0})


def nbd_members(n: int, seed: int, r: float = 0.6, alpha: float = 30.0) -> pd.DataFrame:
    """Members who never drop out (Poisson purchases at gamma-distributed rates per day): the BG/NBD likelihood
    keeps rising as a, b → ∞ at a vanishing a/(a+b). Given x purchases in (0, T], the last is T·U^(1/x)."""
    rng = np.random.default_rng(seed)
    big_t = rng.uniform(30, 400, n)
    x = rng.poisson(rng.gamma(r, 1 / alpha, n) * big_t).astype(float)
    t_x = np.where(x > 0, big_t * rng.random(n) ** (1 / np.maximum(x, 1)), 0.0)
    return _frame(x, t_x, big_t)


def bgnbd_members(n: int, seed: int, r: float, alpha: float, a: float, b: float) -> pd.DataFrame:
    """Members drawn from a BG/NBD: purchase rate λ ~ Gamma(r, α), dropout probability p ~ Beta(a, b) after each
    repeat purchase (vectorised over members, one step per purchase)."""
    rng = np.random.default_rng(seed)
    lam, p = rng.gamma(r, 1 / alpha, n), rng.beta(a, b, n)
    big_t = rng.uniform(60, 500, n)
    t, x, t_x = np.zeros(n), np.zeros(n), np.zeros(n)
    active = np.ones(n, dtype=bool)
    while active.any():
        t = np.where(active, t + rng.exponential(1 / np.maximum(lam, 1e-12)), t)
        bought = active & (t <= big_t)
        x += bought
        t_x = np.where(bought, t, t_x)
        active = bought & (rng.random(n) >= p)
    return _frame(x, t_x, big_t)


def _within_bounds(m: BgNbd) -> bool:
    return all(lo * (1 - 1e-9) <= getattr(m, k) <= hi * (1 + 1e-9) for k, (lo, hi) in BOUNDS.items())


def _unbounded_fit(f: pd.DataFrame) -> tuple[np.ndarray, float]:
    """The fit as it was before BOUNDS (same start, optimizer and options): parameters and mean log-likelihood."""
    from scipy.optimize import minimize

    x, t_x, big_t, valid = _rfm(f)
    x, t_x, big_t = x[valid], t_x[valid], big_t[valid]

    def nll(logp: np.ndarray) -> float:
        v = -_log_likelihood(np.exp(logp), x, t_x, big_t).mean()
        return float(v) if np.isfinite(v) else 1e12

    res = minimize(nll, np.log([1.0, float(np.mean(big_t)), 1.5, 3.0]), method="Nelder-Mead",
                   options={"maxiter": 4000, "xatol": 1e-6, "fatol": 1e-10})
    return np.exp(res.x), -float(res.fun)


def _mean_ll(m: BgNbd, f: pd.DataFrame) -> float:
    x, t_x, big_t, valid = _rfm(f)
    return float(_log_likelihood(np.array([m.r, m.alpha, m.a, m.b]), x[valid], t_x[valid], big_t[valid]).mean())


@pytest.mark.parametrize("seed", [0, 2])
def test_no_dropout_rows_give_a_finite_fit_as_good_as_the_unbounded_one(seed) -> None:
    """Rows without dropout drive the unbounded fit to the NBD limit at infinity (here b ≈ 1e45–1e63; Online
    Retail's refit rows: a≈1.4e18, b≈1.4e27) and its expected purchases to nonsense; bounded, every parameter stays
    finite, the likelihood is as high, and the expectations are those of the NBD, (r + x)/(α + T)·t, on average."""
    f = nbd_members(3000, seed)
    unbounded, ll_unbounded = _unbounded_fit(f)
    assert max(unbounded[2:]) > 1e12  # the degenerate case, reproduced
    m = BgNbd.fit(f, 90)
    assert _within_bounds(m) and all(np.isfinite([m.r, m.alpha, m.a, m.b]))
    assert _mean_ll(m, f) >= ll_unbounded - 1e-5  # the bounds cost no fit
    assert m.a / (m.a + m.b) < 1e-3  # dropout ~0
    assert m.r == pytest.approx(0.6, rel=0.15) and m.alpha == pytest.approx(30.0, rel=0.2)
    out = m.transform(f)
    assert np.isfinite(out["bgnbd_expected_purchases"]).all()
    assert ((out["bgnbd_p_alive"] > 0) & (out["bgnbd_p_alive"] <= 1)).all()
    x, big_t = f["orders_lifetime"].to_numpy() - 1, f["days_since_first_order"].to_numpy()
    nbd = (m.r + x) / (m.alpha + big_t) * 90
    assert out["bgnbd_expected_purchases"].mean() == pytest.approx(nbd.mean(), rel=0.02)


def test_dropout_rows_recover_the_parameters_inside_the_bounds() -> None:
    """With real dropout the optimum is interior: the bounds do not bind and the known parameters come back."""
    f = bgnbd_members(6000, 1, r=1.2, alpha=8.0, a=0.6, b=4.0)
    m = BgNbd.fit(f, 60)
    assert _within_bounds(m)
    assert not any(np.isclose(getattr(m, k), v, rtol=1e-3) for k, lims in BOUNDS.items() for v in lims)
    assert m.r == pytest.approx(1.2, rel=0.2) and m.alpha == pytest.approx(8.0, rel=0.25)
    assert m.a / (m.a + m.b) == pytest.approx(0.6 / 4.6, rel=0.3)
    out = m.transform(f)
    assert np.isfinite(out["bgnbd_expected_purchases"]).all()
    assert ((out["bgnbd_p_alive"] > 0) & (out["bgnbd_p_alive"] <= 1)).all()


def test_parameters_must_be_finite_and_positive(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"\['b'\] must be finite and > 0"):
        BgNbd(1.0, 5.0, 0.5, float("inf"), 60)
    m = BgNbd(1.0, 5.0, 0.5, 3.0, 60)
    assert BgNbd.load(m.save(tmp_path / "bgnbd.json")) == m
