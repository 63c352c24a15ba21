"""Loyalty batch speed: every member's tier, points ledger and segments on a synthetic store of 1,000,000 members
(~20M order lines) at one as-of date. Target (issue 4): at most 60 s on this machine (2 cores).

Figures (benchmarks/results/loyalty.json):
- `loyalty_batch_s`: `loyalty.batch.evaluate(orders, events, members, as_of)` (what `member_state` runs) wall
  seconds, inputs in memory; `loyalty_batch_cpu_s` its process CPU seconds (all threads: the orders and the events
  are prepared in two threads, then the members are evaluated in two halves in two threads, so on an idle 2-core
  machine the wall is below the CPU figure); `phase_prepare_s` and `phase_rules_s` the wall seconds of the two
  parallel sections, `phase_<orders|tiers|…>_s` the per-phase thread seconds summed over the two halves;
- `order_lines_per_s`: order lines (before as_of) / `loyalty_batch_s`; `members`, `order_lines`, `events` counts;
- `loyalty_peak_rss_mib`: peak RSS of the fresh process that reads the three tables and runs the batch;
- `read_s`: reading the Parquet tables into pandas (not part of the batch figure).

The store is generated once with `features.synthetic` (seed 7) and cached under data/bench/ (shared with the
features benchmark; override: BENCH_LOYALTY_STORE; size: BENCH_LOYALTY_MEMBERS).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import peak_rss_mib, write_result
from member_ml.settings import Settings

AS_OF = "2025-10-01"
SEED = 7


def _store_path(n: int) -> Path:
    env = os.environ.get("BENCH_LOYALTY_STORE")
    return Path(env) if env else Settings().data_dir / "bench" / f"synthetic_{n}_seed{SEED}"


def _generate(n: int, path: Path) -> None:
    from features.synthetic import generate, write_store

    t0 = time.perf_counter()
    data = generate(n, SEED, on_step=lambda s: print(f"  generate: {s}", flush=True))
    write_store(data, path)
    print(f"generated {data.meta['rows']} in {time.perf_counter() - t0:.0f} s", flush=True)


def measure(path: Path) -> dict[str, Any]:
    """Run in a fresh process: read the tables, time the batch, report counts and peak RSS."""
    import pandas as pd

    from features.store import Store
    from loyalty.batch import evaluate

    store = Store(path)
    t0 = time.perf_counter()
    # the columns the rules read (what features.pipeline fetches for them)
    orders = store.read("orders", columns=["order_id", "member_id", "ordered_at", "amount", "item_id", "category",
                                           "quantity", "status"])
    events = store.read_optional("events")
    members = store.read_optional("members")
    read_s = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    res = evaluate(orders, events, members, AS_OF)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    df = res.frame
    lines = int((orders["ordered_at"] < pd.Timestamp(AS_OF)).sum())
    return {"loyalty_batch_s": round(secs, 2), "loyalty_batch_cpu_s": round(cpu, 2),
            "load_average_1m": round(os.getloadavg()[0], 1), "phases_s": res.timings,
            "order_lines_per_s": round(lines / secs),
            "loyalty_peak_rss_mib": round(peak_rss_mib(), 1), "read_s": round(read_s, 2),
            "members": int(len(df)), "order_lines": lines, "order_lines_total": int(len(orders)),
            "events": int(len(events)) if events is not None else 0,
            "tiers": {str(k): int(v) for k, v in df["tier"].value_counts(dropna=False).items()}}


def main() -> None:
    n = int(os.environ.get("BENCH_LOYALTY_MEMBERS", "1000000"))
    path = _store_path(n)
    if not (path / "orders.parquet").exists():
        _generate(n, path)
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_loyalty", "--measure", str(path)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"loyalty benchmark failed:\n{out.stderr[-4000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(res, indent=2, ensure_ascii=False))
    figures = {k: res[k] for k in ("loyalty_batch_s", "loyalty_batch_cpu_s", "order_lines_per_s",
                                   "loyalty_peak_rss_mib", "read_s", "members", "order_lines", "events")}
    figures.update({f"phase_{k}_s": v for k, v in res["phases_s"].items()})
    units = {"loyalty_batch_s": "s", "loyalty_batch_cpu_s": "s", "order_lines_per_s": "rows/s",
             "loyalty_peak_rss_mib": "MiB", "read_s": "s", "members": "count", "order_lines": "count",
             "events": "count", **{f"phase_{k}_s": "s" for k in res["phases_s"]}}
    write_result("loyalty", figures=figures, units=units,
                 notes={"store": f"features.synthetic n={n} seed={SEED}", "as_of": AS_OF, "target": "≤ 60 s",
                        "tiers": res["tiers"], "load_average_1m_at_end": res["load_average_1m"],
                        "cpu_note": "loyalty_batch_cpu_s is process CPU time over all threads (prepare: orders and "
                                    "events in two threads; rules: two member halves in two threads); on an idle "
                                    "2-core machine the wall figure is below it. phase_*_cpu_s are per-thread CPU "
                                    "seconds (summed over the halves for the rule phases)"}, merge=False)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--measure":
        print(json.dumps(measure(Path(sys.argv[2])), ensure_ascii=False))
    else:
        main()
