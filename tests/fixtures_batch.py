"""A small trained store for the batch-scoring and campaign tests: 300 synthetic members → the four champion models
trained in-process with the serving tests' tiny settings (tests/fixtures/serving/*.yaml) into a private MLflow store
(copied from the initialised template, which skips the slow migrations)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "tests" / "fixtures" / "serving"
MODELS = ("churn", "ltv", "timing", "recs")
AS_OF = "2025-10-01"


def train_small_store(folder: Path, members: int = 300, seed: int = 5) -> dict[str, str]:
    """Generate, train and promote under `folder`; returns {"store", "tracking_uri"}. Sets MLFLOW_TRACKING_URI
    for the duration of the training only (callers set it themselves for their own use)."""
    import os

    from features.store import Store
    from features.synthetic import generate_to_store
    from member_ml.settings import Settings
    from training import trainers

    from tests.fixtures_models import initialised_mlflow_db, use_template_db

    store = folder / "store"
    generate_to_store(members, seed, store)
    uri = use_template_db(initialised_mlflow_db(), f"sqlite:///{folder / 'mlflow.db'}")
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        for m in MODELS:
            out = trainers.load(m).train(Store(store), settings=Settings(), config=CONFIGS / f"{m}.yaml")
            if out.promotion is None or not out.promotion.promoted:
                raise RuntimeError(f"{m} was not promoted to champion in the fixture store: {out.promotion}")
    finally:
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old
    return {"store": str(store), "tracking_uri": uri}


@contextmanager
def trained_champions(folder: Path) -> Iterator[tuple[dict[str, str], Any]]:
    """`train_small_store(folder)`, then, inside the block, MLFLOW_TRACKING_URI pointing at it and its four
    champions loaded (all of them, or the block fails)."""
    import pytest

    from serving.models import load_models

    env = train_small_store(folder)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", env["tracking_uri"])
        models = load_models(list(MODELS), "champion", env["tracking_uri"])
        assert not models.unavailable, models.unavailable
        yield env, models
