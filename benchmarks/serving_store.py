"""A small trained store for the serving tests and benchmarks, built in one separate process:

synthetic members → four champion models (minimal trainer settings, tests/fixtures/serving/*.yaml) in a private MLflow
store → online feature table → `member-ml serve import` into a private BentoML home (pinned tags in a lock file).

`build_trained_store(folder)` runs `python -m benchmarks.serving_store folder` (one process: the heavy imports are
paid once, and the trainers' global MLflow/BentoML state never leaks into the caller, e.g. a pytest worker) and
returns the environment that points `bentoml serve` at the result.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "tests" / "fixtures" / "serving"
MODELS = ("churn", "ltv", "timing", "recs")
AS_OF = "2026-01-01"
ENV_FILE = "serving_env.json"


def served_env(folder: Path) -> dict[str, str]:
    """The environment for `bentoml serve` (and the import CLI) against a store built in `folder`."""
    folder = Path(folder)
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
            "MEMBER_ML_ONLINE_TABLE": str(folder / "online.duckdb"), "MEMBER_ML_STORE": str(folder / "store"),
            "BENTOML_HOME": str(folder / "bentoml"), "MEMBER_ML_SERVING_MODELS_LOCK": str(folder / "models.lock.yaml")}


def build_trained_store(folder: Path, members: int = 120, seed: int = 5, timeout: float = 900) -> dict[str, str]:
    """Build the store under `folder` in a child process; returns the serving environment. Raises RuntimeError
    with the child's output when a step fails, TimeoutExpired after `timeout` seconds."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "build.log"
    with open(log, "wb") as out:
        r = subprocess.run([sys.executable, "-m", "benchmarks.serving_store", str(folder), "--members", str(members),
                            "--seed", str(seed)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    if r.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"building the served store in {folder} failed (exit {r.returncode}):\n{tail}")
    return json.loads((folder / ENV_FILE).read_text())


def _build(folder: Path, members: int, seed: int) -> None:
    """All steps in this process (the child). Prints one timing line per step."""
    env = served_env(folder)
    os.environ.update(env)  # before MLflow and BentoML read them: this process is ours alone

    def step(name: str, t0: float) -> float:
        t = time.perf_counter()
        print(f"{name}: {t - t0:.1f} s", flush=True)
        return t

    t = time.perf_counter()
    from features.online import materialize
    from features.store import Store
    from features.synthetic import generate_to_store
    from member_ml.settings import Settings
    from training import trainers

    generate_to_store(members, seed, folder / "store")
    t = step("generate", t)
    store = Store(folder / "store")
    for name in MODELS:
        out = trainers.load(name).train(store, settings=Settings(), config=str(CONFIGS / f"{name}.yaml"),
                                        promote=True)
        if out.promotion is None or not out.promotion.promoted:
            raise RuntimeError(f"{name}: version {out.version} was not promoted to champion: {out.promotion}")
        t = step(f"train {name}", t)
    materialize(store, AS_OF, folder / "online.duckdb")
    t = step("online table", t)
    from serving.config import load_serving_config
    from serving.import_models import import_champions, write_lock

    cfg = load_serving_config()
    write_lock(Path(env["MEMBER_ML_SERVING_MODELS_LOCK"]), import_champions(cfg.models, cfg.alias,
                                                                              env["MLFLOW_TRACKING_URI"]))
    step("import into BentoML", t)
    (folder / ENV_FILE).write_text(json.dumps(env, indent=1))


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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--members", type=int, default=120)
    p.add_argument("--seed", type=int, default=5)
    a = p.parse_args(argv)
    _build(a.folder.resolve(), a.members, a.seed)


if __name__ == "__main__":
    main()
