"""A small store with a real churn/value signal for the model tests (fast: a few hundred members, ~14 months).

Each member buys as a Poisson process (rate drawn per member) from joining until a hidden "death" time (exponential
lifetime), with a member-level mean basket value, so recency, frequency and spend genuinely predict churn and LTV.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from features.store import Store

START = pd.Timestamp("2023-01-01")
REGIONS = ["浙江", "广东", "江苏", "上海"]


def make_model_store(path: Path, n_members: int = 300, seed: int = 0, days: int = 425) -> Store:
    """Write orders (and members) for `n_members` to a store at `path` and return it."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"m{i:05d}" for i in range(n_members)])
    join = rng.uniform(0, 120, n_members)
    rate = rng.gamma(2.0, 1 / 30.0, n_members)  # orders per day, mean ~0.07
    life = rng.exponential(420.0, n_members)
    basket = rng.lognormal(4.0, 0.6, n_members)
    n_orders = rng.poisson(rate * np.maximum(np.minimum(join + life, days) - join, 0)) + 1
    member = np.repeat(np.arange(n_members), n_orders)
    end = np.minimum(join + life, days)[member]
    t = join[member] + rng.uniform(0, 1, len(member)) * np.maximum(end - join[member], 0.5)
    t = np.minimum(t, days - 0.01)
    amount = np.round(basket[member] * rng.lognormal(0, 0.3, len(member)), 2)
    orders = pd.DataFrame({
        "order_id": [f"o{i}" for i in range(len(member))],
        "member_id": ids[member],
        "ordered_at": (START + pd.to_timedelta(t, unit="D")).floor("min"),
        "amount": amount,
        "category": rng.choice(["美妆", "食品", "家居"], len(member)),
        "status": "paid",
    })
    members = pd.DataFrame({"member_id": ids, "joined_at": START + pd.to_timedelta(join, unit="D"),
                            "region": rng.choice(REGIONS, n_members), "gender": rng.choice(["F", "M"], n_members)})
    store = Store(path)
    store.path.mkdir(parents=True, exist_ok=True)
    store.write("orders", orders)
    store.write("members", members)
    return store


FAST_CHURN_YAML = "num_boost_round: 60\nearly_stopping_rounds: 20\nn_boot: 100\nmax_train_cutoffs: 2\n"
FAST_LTV_YAML = FAST_CHURN_YAML + "kind: auto\n"


def initialised_mlflow_db(folder: Path | None = None) -> Path:
    """An empty MLflow SQLite store with its tables created, made once per machine and MLflow version.

    Creating the tables runs MLflow's migrations (~15 s on a busy 2-core machine); tests copy this file instead.
    Written to a temporary name and renamed, so parallel workers never see a half-made file.
    """
    import os
    import tempfile

    import mlflow
    from mlflow import MlflowClient

    cache = Path(tempfile.gettempdir()) / f"member-ml-mlflow-template-{mlflow.__version__}.db"
    if cache.exists():
        return cache
    work = Path(tempfile.mkdtemp(prefix="mlflow-template-", dir=folder))
    db = work / "template.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    os.replace(db, cache)
    return cache


def use_template_db(template: Path, tracking_uri: str) -> str:
    """Copy the initialised template database to the path of the `tracking_uri` fixture's store."""
    import shutil

    target = Path(tracking_uri.removeprefix("sqlite:///"))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, target)
    return tracking_uri
