"""/score by inline history over HTTP, with the server's CPU per request: `python -m benchmarks.run serving_inline`.

The inline path computes a member's features from the history in the request (DuckDB feature definitions, the
loyalty replay, the recs history summary, the four models), so unlike /score by member_id it is CPU-bound: the
figure that matters is the worker's CPU time per request (user + system of the server's worker processes, from
psutil, all threads), which a busy machine inflates far less than wall time. Measured: sequential requests (wall
p50/p99 and CPU ms per request), then wrk at concurrency 8 and 32 (req/s, p99, errors, CPU ms per request).

The same request bodies as `bench_serving` (`benchmarks.serving_store.inline_histories`: 50 members of a trained
1,000-member synthetic store, as of 2026-01-01). `BENCH_SERVING_STORE=DIR` reuses a store built by
`benchmarks.serving_store`; otherwise one is built here. `BENCH_INLINE_BASELINE_ROOT=DIR` (a source tree of another
commit, e.g. a `git worktree` of the previous one) also measures that tree's server against the same store, the two
interleaved round by round so that load from other processes falls on both alike. Writes
benchmarks/results/serving_inline.json.
"""
from __future__ import annotations

import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import write_result
from benchmarks.loadgen import ensure_wrk, sequential, wrk
from serving.launch import RunningServer, serve

SEQ_N = int(os.environ.get("BENCH_INLINE_SEQ", "200"))
WRK_SECONDS = int(os.environ.get("BENCH_INLINE_SECONDS", "15"))
ROUNDS = int(os.environ.get("BENCH_INLINE_ROUNDS", "2"))


def worker_cpu_s(srv: RunningServer) -> float:
    """User + system CPU seconds of the server's worker processes so far (every thread)."""
    import psutil

    total = 0.0
    for pid in srv.worker_pids():
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def measure(srv: RunningServer, bodies: list[bytes]) -> dict[str, dict[str, float]]:
    """Sequential, then wrk at 8 and 32 connections; each with the worker CPU ms per completed request."""
    url = srv.url + "/score"
    out: dict[str, dict[str, float]] = {}
    c0 = worker_cpu_s(srv)
    seq = sequential(url, bodies, n=SEQ_N)
    seq["cpu_ms_per_request"] = (worker_cpu_s(srv) - c0) / SEQ_N * 1e3
    out["sequential"] = seq
    for conns in (8, 32):
        c0 = worker_cpu_s(srv)
        r = wrk(url, bodies, connections=conns, seconds=WRK_SECONDS)
        r["cpu_ms_per_request"] = (worker_cpu_s(srv) - c0) / max(r["requests"], 1.0) * 1e3
        out[f"c{conns}"] = r
    out["load_average"] = {"after": round(os.getloadavg()[0], 2)}
    return out


def _median_runs(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for level in ("sequential", "c8", "c32"):
        keys = [k for k in runs[0][level] if isinstance(runs[0][level][k], (int, float))]
        out[level] = {k: round(float(statistics.median(r[level][k] for r in runs)), 2) for k in keys}
        out[level]["errors"] = float(sum(r[level].get("errors", 0.0) for r in runs))
    out["load_average_after_rounds"] = [r["load_average"]["after"] for r in runs]
    return out


def main() -> None:
    ensure_wrk()
    from benchmarks.serving_store import AS_OF, inline_histories

    baseline_root = os.environ.get("BENCH_INLINE_BASELINE_ROOT")
    with tempfile.TemporaryDirectory() as tmp:
        store_dir = os.environ.get("BENCH_SERVING_STORE")
        if store_dir:
            from benchmarks.serving_store import served_env

            env = served_env(Path(store_dir))
        else:
            from benchmarks.serving_store import build_trained_store

            print("  building a trained store (1,000 synthetic members, four champion models)", flush=True)
            env = build_trained_store(Path(tmp), members=1000)
        hist = inline_histories(Path(env["MEMBER_ML_STORE"]), AS_OF, 50)
        bodies = [json.dumps(h).encode() for h in hist]
        trees: dict[str, tuple[dict[str, str], Path | None]] = {"current": (env, None)}
        if baseline_root:
            root = Path(baseline_root).resolve()
            trees["baseline"] = ({**env, "PYTHONPATH": str(root)}, root)
        load0 = round(os.getloadavg()[0], 2)
        runs: dict[str, list[dict[str, dict[str, float]]]] = {k: [] for k in trees}
        for rnd in range(ROUNDS):
            for name, (tree_env, cwd) in trees.items():
                with serve(tree_env, ready_timeout=300, cwd=cwd) as srv:
                    sequential(srv.url + "/score", bodies, n=20)  # warm-up
                    r = measure(srv, bodies)
                runs[name].append(r)
                print(f"  round {rnd + 1} {name:8s} seq p50 {r['sequential']['p50_ms']:.0f} ms, "
                      f"{r['sequential']['cpu_ms_per_request']:.1f} CPU ms/req | c8 {r['c8']['rps']:.1f} req/s "
                      f"{r['c8']['cpu_ms_per_request']:.1f} CPU ms/req | c32 {r['c32']['rps']:.1f} req/s p99 "
                      f"{r['c32']['p99_ms']:.0f} ms, errors {r['c32']['errors']:.0f} "
                      f"(load average {r['load_average']['after']})", flush=True)
    figures: dict[str, float] = {}
    units: dict[str, str] = {}
    notes: dict[str, Any] = {"load_average_at_start": load0, "load_average_at_end": round(os.getloadavg()[0], 2),
                             "requests": "50 inline histories (≈67 order lines, ≈370 events each), as of 2026-01-01",
                             "cpu": "worker user+system CPU per completed request (all threads), median of rounds",
                             "rounds": ROUNDS, "sequential_requests": SEQ_N, "wrk_seconds": WRK_SECONDS}
    for name, rs in runs.items():
        med = _median_runs(rs)
        notes[name] = med
        prefix = "inline" if name == "current" else "inline_baseline"
        for level in ("sequential", "c8", "c32"):
            figures[f"{prefix}_{level}_cpu_ms_per_request"] = med[level]["cpu_ms_per_request"]
            units[f"{prefix}_{level}_cpu_ms_per_request"] = "ms"
            for k in ("p50_ms", "p99_ms"):
                figures[f"{prefix}_{level}_{k}"] = med[level][k]
                units[f"{prefix}_{level}_{k}"] = "ms"
            if level != "sequential":
                figures[f"{prefix}_{level}_rps"] = med[level]["rps"]
                units[f"{prefix}_{level}_rps"] = "req/s"
            figures[f"{prefix}_{level}_errors"] = med[level]["errors"]
            units[f"{prefix}_{level}_errors"] = "requests"
    write_result("serving_inline", figures=figures, units=units, notes=notes, merge=False)


if __name__ == "__main__":
    main()
