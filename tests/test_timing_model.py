"""The timing model core on generated frames: it learns who buys sooner, its outputs are a proper distribution,
it survives a save/load round trip as plain files, and bad input gets clear errors."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from training.member_pyfunc.timing import OUTPUT_COLUMNS, TimingModel
from training.timing.config import TimingConfig, load_config
from training.timing.evaluate import concordance_bootstrap
from training.timing.model import fit_timing_model
from training.timing.trainer import model_curve

HORIZON = 45
CFG = TimingConfig.model_validate({"hazard": {"horizon_days": HORIZON, "num_boost_round": 60,
                                              "early_stopping_rounds": 10, "min_data_in_leaf": 20}})


def frame(n: int, seed: int, horizon: int = HORIZON) -> pd.DataFrame:
    """Members whose next order comes after an exponential wait with a mean set by their gap and a segment."""
    rng = np.random.default_rng(seed)
    gap = rng.gamma(2.0, 8.0, n)
    seg = rng.choice(["app", "web", "store"], n)
    mean_wait = gap * np.where(seg == "app", 0.5, 1.0)
    t = rng.exponential(mean_wait)
    return pd.DataFrame({
        "member_id": pd.array([f"m{seed}_{i}" for i in range(n)], dtype="string"),
        "cutoff": pd.Timestamp("2024-06-01"),
        "recency_days": rng.uniform(0, 20, n), "gap_mean_days": gap, "noise": rng.normal(size=n),
        "channel": pd.array(seg, dtype="string"),
        "days_to_next": np.minimum(t, horizon), "next_observed": (t < horizon).astype("int64"),
    })


@pytest.fixture(scope="module")
def fitted():
    return fit_timing_model(frame(1500, 1), frame(500, 2), config=CFG)


def test_learns_who_buys_sooner(fitted):
    test = frame(800, 3)
    curve = model_curve(fitted.model, test, HORIZON)
    t, e = test["days_to_next"].to_numpy(), test["next_observed"].to_numpy() > 0
    c = concordance_bootstrap(t, e, {"model": curve.cdf.sum(axis=1), "gap_only": 1 / test["gap_mean_days"]})
    assert c["model"][0] > c["gap_only"][0] > 0.5
    assert fitted.importance.index[0] in {"gap_mean_days", "channel", "pp_elapsed_over_gap", "pp_bin_start"}


def test_outputs_are_a_distribution(fitted):
    test = frame(50, 4)
    out = fitted.model.predict(None, test, params={"as_of": "2024-06-01"})
    assert list(out.columns) == OUTPUT_COLUMNS and len(out) == 50
    p = out[[c for c in OUTPUT_COLUMNS if c.startswith("p_")]].to_numpy()
    assert np.all((p >= 0) & (p <= 1)) and np.all(np.diff(p, axis=1) >= 0)
    assert np.all(out["median_days"] > 0) and np.all(out["expected_days"] > 0)
    gap = (out["next_purchase_date"] - pd.Timestamp("2024-06-01")).dt.days
    assert (gap == np.ceil(out["median_days"])).all()
    # without an as-of the frame's cutoff column is used
    out2 = fitted.model.predict(None, test)
    assert out2["next_purchase_date"].equals(out["next_purchase_date"])
    assert out2.drop(columns="next_purchase_date").equals(out.drop(columns="next_purchase_date"))


def test_round_trip_as_plain_files(fitted, tmp_path):
    arts = fitted.model.save_artifacts(tmp_path / "a")
    loaded = TimingModel()
    loaded.load_context(SimpleNamespace(artifacts=arts))
    test = frame(30, 5)
    pd.testing.assert_frame_equal(loaded.predict(None, test), fitted.model.predict(None, test))
    assert loaded.meta["approach"] == "lightgbm-discrete-time-hazard"


def test_missing_feature_and_label_errors(fitted):
    with pytest.raises(ValueError, match="gap_mean_days"):
        fitted.model.predict(None, frame(5, 6).drop(columns="gap_mean_days"))
    with pytest.raises(ValueError, match="days_to_next"):
        fit_timing_model(frame(50, 7).drop(columns="days_to_next"), config=CFG)


def test_config_from_yaml(tmp_path):
    p = tmp_path / "timing.yaml"
    p.write_text("hazard:\n  horizon_days: 60\nreplenishment:\n  min_purchases: 4\n", encoding="utf-8")
    cfg = load_config(p)
    assert cfg.hazard.edges()[-1] == 60 and cfg.replenishment.min_purchases == 4
    p.write_text("hazard:\n  horizont: 60\n", encoding="utf-8")
    with pytest.raises(ValueError, match="horizont"):
        load_config(p)
    with pytest.raises(ValueError, match="bin_edges"):
        TimingConfig.model_validate({"hazard": {"horizon_days": 30, "bin_edges": [0, 7, 14]}})
