"""The champion gate: promote when better on the same backtest, refuse when worse, re-score the champion on a
different backtest, keep the alias history and roll back."""
from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from member_ml.settings import Settings
from training import churn, registry, tracking
from training.model_logging import log_pyfunc_model

from tests.test_models_pyfunc import FAST, member_frame


def register(model, backtest: dict, tmp: Path) -> str:
    """Log + register a churn model the way the trainer does (backtest artifacts, gate tags); return its version."""
    with tracking.start_run("churn", Settings()) as run:
        fp = registry.log_backtest(backtest)
        arts = model.save_artifacts(tmp / run.info.run_id)
        cols = ["member_id", *model.spec.columns]
        info = log_pyfunc_model(entry=churn.ENTRY, artifacts=arts, input_example=backtest["test"][cols].head(2),
                                registered_model_name="churn")
        v = str(info.registered_model_version)
        registry.tag_version("churn", v, run_id=run.info.run_id, fingerprint=fp, metric="auc",
                             value=churn.score(model, backtest))
    return v


def test_gate_promote_refuse_rescore_and_rollback(tracking_uri, tmp_path):
    tracking.configure(Settings())
    valid = member_frame(500, 11)
    good, _ = churn.fit(member_frame(1500, 12), valid, churn.ChurnConfig(**FAST))
    weak, _ = churn.fit(member_frame(1500, 13, signal=0.05), valid, churn.ChurnConfig(**FAST))
    bt = {"test": member_frame(400, 14)}
    bt_other = {"test": member_frame(400, 15)}
    assert churn.score(good, bt) > churn.score(weak, bt) + 0.1

    v1 = register(weak, bt, tmp_path)
    r = registry.promote(churn.SPEC)
    assert r.promoted and "no champion yet" in r.reason

    v2 = register(good, bt, tmp_path)
    r = registry.promote(churn.SPEC)
    assert r.promoted and "same backtest data" in r.reason and r.champion_version == v1
    assert str(registry.champion_version("churn").version) == v2

    v3 = register(weak, bt, tmp_path)
    r = registry.promote(churn.SPEC, v3)
    assert not r.promoted and "does not beat" in r.reason
    assert str(registry.champion_version("churn").version) == v2

    # evaluated on other data: the champion's pyfunc is re-scored on the challenger's backtest set
    v4 = register(weak, bt_other, tmp_path)
    r = registry.promote(churn.SPEC, v4)
    assert not r.promoted and "re-scored" in r.reason
    assert r.champion == pytest.approx(churn.score(good, bt_other))
    assert registry.promote(churn.SPEC, v2).reason == f"v{v2} is already the champion"

    rows = {r["model"]: r for r in registry.list_models()}
    assert rows["churn"]["versions"] == 4 and rows["churn"]["champion"] == v2 and rows["churn"]["metric"] == "auc"

    r = registry.rollback("churn")
    assert r.version == v1 and str(registry.champion_version("churn").version) == v1
    assert mlflow.MlflowClient().get_model_version("churn", v2).tags.get(registry.TAG_ROLLED_BACK_AT)
    with pytest.raises(registry.RegistryError, match="no previous champion"):
        registry.rollback("churn")
    with pytest.raises(registry.RegistryError, match="no version 99"):
        registry.promote(churn.SPEC, 99)
