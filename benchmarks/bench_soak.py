"""Soak: /score by member_id at concurrency 8 for 5 minutes (issue 10): zero errors, and the worker's RSS after the
first minute must grow by less than 10%. `python -m benchmarks.run soak`; figures go to serving.json.

Uses a store built by benchmarks/serving_store.py (BENCH_SERVING_STORE=folder to reuse one). wrk runs in 10-second
slices so RSS is sampled between them (the load pauses for a few milliseconds per slice).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from benchmarks.bench_serving import service_bodies
from benchmarks.common import write_result
from benchmarks.loadgen import ensure_wrk, wrk
from serving.launch import serve

SOAK_SECONDS = int(os.environ.get("BENCH_SOAK_SECONDS", "300"))
SLICE = 10


def main() -> None:
    ensure_wrk()
    with tempfile.TemporaryDirectory() as tmp:
        if d := os.environ.get("BENCH_SERVING_STORE"):
            from benchmarks.serving_store import served_env

            env = served_env(Path(d))
        else:
            from benchmarks.serving_store import build_trained_store

            env = build_trained_store(Path(tmp), members=1000)
        bodies = service_bodies(env)["score_member_id"]
        samples: list[tuple[int, float]] = []
        load0 = round(os.getloadavg()[0], 2)
        errors = requests = 0.0
        with serve(env, ready_timeout=300) as srv:
            url = srv.url + "/score"
            for t in range(0, SOAK_SECONDS, SLICE):
                r = wrk(url, bodies, connections=8, seconds=SLICE)
                errors += r["errors"]
                requests += r["requests"]
                samples.append((t + SLICE, round(srv.worker_rss_mib(), 1)))
                print(f"  soak {t + SLICE:4d} s: {r['rps']:.0f} req/s p99 {r['p99_ms']:.1f} ms, "
                      f"worker RSS {samples[-1][1]:.1f} MiB, errors so far {errors:.0f}", flush=True)
    after_first_minute = next(rss for t, rss in samples if t >= min(60, SOAK_SECONDS))
    final = samples[-1][1]
    growth = (final - after_first_minute) / after_first_minute * 100
    write_result("serving", figures={
        "soak_seconds": float(SOAK_SECONDS), "soak_requests": requests, "soak_errors": errors,
        "soak_rss_after_1min_mib": after_first_minute, "soak_rss_final_mib": final,
        "soak_rss_growth_after_1min_pct": round(growth, 2),
    }, units={"soak_seconds": "s", "soak_requests": "requests", "soak_errors": "requests",
              "soak_rss_after_1min_mib": "MiB", "soak_rss_final_mib": "MiB", "soak_rss_growth_after_1min_pct": "%"},
        notes={"soak_rss_samples": samples, "soak_load_average": [load0, round(os.getloadavg()[0], 2)],
               "soak_note": "RSS = the BentoML worker process serving requests; wrk in 10-second slices, c=8, "
                            "/score by member_id over the trained store's members"})
    print(f"  soak: {requests:.0f} requests, {errors:.0f} errors, RSS {after_first_minute} → {final} MiB "
          f"({growth:+.1f}% after the first minute)")


if __name__ == "__main__":
    main()
