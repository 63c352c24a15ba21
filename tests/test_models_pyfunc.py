"""The served models (training.member_pyfunc): feature matrix, reasons in plain words, non-negative LTV, and the
round trip through MLflow's registry into a process that cannot import `training`."""
from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from member_ml.settings import Settings
from training import churn, ltv, registry, tracking
from training.member_pyfunc.matrix import SMALL, FeatureSpec
from training.member_pyfunc.reasons import humanize, templates_for, top_reasons
from training.model_logging import log_pyfunc_model


ROOT = Path(__file__).resolve().parent.parent


def member_frame(n: int, seed: int, signal: float = 1.0, cutoff: str = "2024-01-01") -> pd.DataFrame:
    """Feature rows with named features like the pipeline's, and churn/ltv labels driven by them (× signal)."""
    rng = np.random.default_rng(seed)
    gap = rng.uniform(5, 60, n)
    recency = rng.exponential(gap * 1.5)
    orders = rng.poisson(90 / gap)
    logit = signal * (recency / gap - 1.5) - 0.3 * orders * signal
    churn_y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    spend = np.where(churn_y > 0, 0.0, rng.gamma(2, 20 * (1 + orders)))
    return pd.DataFrame({
        "member_id": pd.array([f"m{seed}_{i}" for i in range(n)], dtype="string"),
        "cutoff": pd.Timestamp(cutoff),
        "recency_days": recency.round(), "gap_mean_days": gap.round(1), "recency_over_gap": recency / gap,
        "orders_90d": orders.astype(float), "spend_trend": rng.uniform(-1, 1, n),
        "region": pd.array(rng.choice(["浙江", "广东", "上海"], n), dtype="string"),
        "churn": churn_y, "ltv": spend, "days_to_next": 30.0, "next_observed": 1.0,
    })


FAST = dict(horizon_days=60, num_boost_round=40, early_stopping_rounds=10, n_boot=50)


@pytest.fixture(scope="module")
def churn_model():
    model, _ = churn.fit(member_frame(1500, 1), member_frame(600, 2), churn.ChurnConfig(**FAST))
    return model


def test_feature_matrix_small_and_large_paths_agree():
    df = member_frame(SMALL + 50, 3)
    df.loc[3, "region"] = "火星"  # a level never seen in training
    df.loc[4, "orders_90d"] = np.nan
    spec = FeatureSpec.from_frame(member_frame(200, 4), exclude=churn.NON_FEATURES)
    assert spec.categories == {"region": ["上海", "广东", "浙江"]}
    big = spec.matrix(df)
    small = spec.matrix(df.head(10))
    np.testing.assert_array_equal(big[:10], small)
    j = spec.columns.index("region")
    assert np.isnan(big[3, j]) and np.isnan(big[4, spec.columns.index("orders_90d")])
    with pytest.raises(ValueError, match="orders_90d"):
        spec.matrix(df.drop(columns=["orders_90d"]))


def test_reasons_are_plain_words():
    frame = pd.DataFrame({"recency_days": [92.0, 10.0], "gap_mean_days": [21.0, np.nan],
                          "orders_90d": [0.0, 3.0], "ev_login_30d": [1.0, 0.0]})
    cols = list(frame.columns)
    contrib = np.array([[2.0, 0.1, 0.5, -1.0, 0.0],   # recency, then orders, then gap; login pushes down
                        [0.3, -0.2, 0.0, 0.0, 0.0]])  # only one positive contribution
    r1, r2, r3 = top_reasons(contrib, frame, cols, 3)
    assert r1[0] == "92 days since last order, usual gap 21 days"
    assert r2[0] == "orders in the last 90 days: 0"
    assert r3[0] == "usual days between orders: 21"
    assert r1[1] == "10 days since last order, only one order so far" and r2[1] == "" and r3[1] == ""
    assert humanize("spend_365d") == "spend in the last 365 days"
    assert humanize("ev_login_30d") == "login events in the last 30 days"
    trend = templates_for(["spend_trend"])["spend_trend"]
    v = top_reasons(np.array([[1.0, 0.0]] * 3), pd.DataFrame({"spend_trend": [-0.6, -1.0, np.nan]}), ["spend_trend"], 1)
    assert list(v[0]) == ["spend in the last 90 days down 75% on the 90 days before",
                          "no spend in the last 90 days, after some in the 90 days before",
                          "no spend in the last 180 days"]
    assert callable(trend)
    assert set(templates_for(cols)) == set(cols)


def test_churn_predict_columns_probabilities_and_reasons(churn_model):
    test = member_frame(300, 5)
    out = churn_model.predict(None, test)
    assert list(out.columns) == ["member_id", "churn_probability", "reason_1", "reason_2", "reason_3"]
    assert out["member_id"].tolist() == test["member_id"].tolist()
    p = out["churn_probability"].to_numpy()
    assert ((p > 0) & (p < 1)).all()
    assert abs(p.mean() - test["churn"].mean()) < 0.1  # calibrated on held-out validation rows
    assert (out["reason_1"].str.len() > 0).mean() > 0.9
    quick = churn_model.predict(None, test, params={"reasons": False})
    np.testing.assert_allclose(quick["churn_probability"], p)
    assert (quick["reason_1"] == "").all()


@pytest.mark.parametrize("kind", ["tweedie", "two_part"])
def test_ltv_is_never_negative(kind):
    cfg = ltv.LtvConfig(kind=kind, **FAST)
    model, info = ltv.fit(member_frame(1500, 6), member_frame(600, 7), cfg)
    assert info["kind"] == kind
    test = member_frame(400, 8)
    test.loc[:50, ["recency_days", "orders_90d"]] = [1e6, -5.0]  # out-of-range inputs still give ≥ 0
    v = model.predict(None, test)["ltv"].to_numpy()
    assert np.isfinite(v).all() and (v >= 0).all() and v.max() > 0


def test_pyfunc_round_trip_through_registry_without_training(tracking_uri, churn_model, tmp_path):
    tracking.configure(Settings())
    test = member_frame(200, 9)
    cols = ["member_id", *churn_model.spec.columns]
    with tracking.start_run("churn", Settings()):
        arts = churn_model.save_artifacts(tmp_path / "arts")
        info = log_pyfunc_model(entry=churn.ENTRY, artifacts=arts, input_example=test[cols].head(3),
                                output_example=churn_model.predict(None, test[cols].head(3)),
                                registered_model_name="churn")
    registry.tag_version("churn", info.registered_model_version, run_id=info.run_id, fingerprint="f", metric="auc",
                         value=0.8)
    assert registry.promote(churn.SPEC).promoted
    import mlflow

    loaded = mlflow.pyfunc.load_model("models:/churn@champion")
    expected = churn_model.predict(None, test[cols])
    pd.testing.assert_frame_equal(loaded.unwrap_python_model().predict(None, test[cols]), expected)
    pd.testing.assert_frame_equal(loaded.predict(test[cols]).reset_index(drop=True), expected)
    # with `training` hidden and unimportable, the champion loads and scores (what serving does)
    with no_training_imports():
        fresh = mlflow.pyfunc.load_model("models:/churn@champion").unwrap_python_model()
        out = fresh.predict(None, test[cols])
        assert type(fresh).__module__ == "member_pyfunc.churn"  # the copy bundled in the model's code/ folder
    pd.testing.assert_frame_equal(out, expected)


@contextmanager
def no_training_imports() -> Iterator[None]:
    """Hide the imported `training` modules and refuse any import of them for the duration."""

    class NoTraining(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):  # noqa: ANN001, ANN201
            if name == "training" or name.startswith("training."):
                raise ImportError(f"serving must not import training ({name})")
            return None

    hidden = {k: sys.modules.pop(k) for k in list(sys.modules)
              if k in ("training", "member_pyfunc") or k.startswith(("training.", "member_pyfunc."))}
    finder = NoTraining()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for k in [k for k in sys.modules if k == "member_pyfunc" or k.startswith("member_pyfunc.")]:
            del sys.modules[k]
        sys.modules.update(hidden)


def test_each_loaded_model_runs_the_package_it_was_logged_with(tracking_uri, churn_model, tmp_path):
    """Two models logged at different commits, loaded in one process (serving loads four): each runs its own bundled
    `member_pyfunc`, not the copy of whichever model was loaded first."""
    import inspect

    import mlflow

    tracking.configure(Settings())
    test = member_frame(50, 10)
    cols = ["member_id", *churn_model.spec.columns]
    with tracking.start_run("churn", Settings()):
        arts = churn_model.save_artifacts(tmp_path / "arts")
        info = log_pyfunc_model(entry=churn.ENTRY, artifacts=arts, input_example=test[cols].head(3))
    dirs = [Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / name)))
            for name in ("old", "new")]
    # the "new" model's bundled code differs from the "old" one's (as if logged at a later commit)
    bundled = next(dirs[1].rglob("member_pyfunc/churn.py"))
    bundled.write_text(bundled.read_text(encoding="utf-8") + "\nLOGGED_AT = 'new commit'\n", encoding="utf-8")
    with no_training_imports():
        old = mlflow.pyfunc.load_model(str(dirs[0])).unwrap_python_model()
        new = mlflow.pyfunc.load_model(str(dirs[1])).unwrap_python_model()
        # the module each class was defined in (its methods' globals; sys.modules holds only the latest import)
        old_module, new_module = type(old).predict.__globals__, type(new).predict.__globals__
        assert Path(old_module["__file__"]).is_relative_to(dirs[0])
        assert Path(new_module["__file__"]).is_relative_to(dirs[1])
        assert new_module.get("LOGGED_AT") == "new commit" and "LOGGED_AT" not in old_module
        pd.testing.assert_frame_equal(old.predict(None, test[cols]), new.predict(None, test[cols]))
