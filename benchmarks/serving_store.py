"""A small trained store for the serving tests and benchmarks: synthetic members → four champion models (tiny trainer
settings, tests/fixtures/serving/*.yaml) in a private MLflow store → online table. Uses the CLI, as a user would."""
from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "tests" / "fixtures" / "serving"
MODELS = ("churn", "ltv", "timing", "recs")
AS_OF = "2026-01-01"


def _cli(*args: str, env: dict[str, str]) -> None:
    exe = Path(sys.executable).parent / "member-ml"
    r = subprocess.run([str(exe), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    if r.returncode != 0:
        raise RuntimeError(f"member-ml {' '.join(args)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")


def build_trained_store(folder: Path, members: int = 400, seed: int = 5) -> dict[str, str]:
    """Build it under `folder`; returns the environment that points the service at it."""
    from features.synthetic import generate_to_store

    generate_to_store(members, seed, folder / "store")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
    _cli("models", env=env)  # creates the registry database once, before two trainers run side by side
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda m: _cli("train", m, "--store", str(folder / "store"), "--config",
                                     str(CONFIGS / f"{m}.yaml"), env=env), MODELS))
    _cli("online", "build", "--store", str(folder / "store"), "--as-of", AS_OF, "--out",
         str(folder / "online.duckdb"), env=env)
    return {"MLFLOW_TRACKING_URI": env["MLFLOW_TRACKING_URI"], "MEMBER_ML_ONLINE_TABLE": str(folder / "online.duckdb"),
            "MEMBER_ML_STORE": str(folder / "store")}


def inline_histories(store: Path, as_of: str, n: int) -> list[dict]:
    """Request bodies for /score by inline history: n members' own orders and events before as_of, in time order."""
    import pandas as pd

    from features.store import Store

    s = Store(store)
    orders = s.read("orders")
    events = s.read_optional("events")
    t = pd.Timestamp(as_of)
    ids = orders.loc[orders["ordered_at"] < t, "member_id"].drop_duplicates().head(n).tolist()
    out = []
    for m in ids:
        o = orders[(orders["member_id"] == m) & (orders["ordered_at"] < t)].sort_values("ordered_at")
        lines = [{"order_id": str(r.order_id), "ordered_at": r.ordered_at.isoformat(), "amount": float(r.amount),
                  "item_id": None if pd.isna(r.item_id) else str(r.item_id),
                  "category": None if pd.isna(r.category) else str(r.category),
                  "status": str(r.status) if not pd.isna(r.status) else "paid"} for r in o.itertuples()]
        ev = []
        if events is not None:
            e = events[(events["member_id"] == m) & (events["occurred_at"] < t)].sort_values("occurred_at")
            ev = [{"occurred_at": r.occurred_at.isoformat(), "type": str(r.type),
                   "item_id": None if pd.isna(r.item_id) else str(r.item_id)} for r in e.itertuples()]
        out.append({"history": {"member_id": str(m), "as_of": t.isoformat(), "orders": lines, "events": ev}})
    return out
