"""Online scoring latency over real HTTP (issue 10): `python -m benchmarks.run serving`.

Starts `bentoml serve` on a free loopback port and drives it with wrk (Debian package; installed when missing and
running as root, see benchmarks/loadgen.py) and with a sequential Python client:

1. Ablation on the service's /echo endpoint (the floor): BentoML 1.4 as shipped, then each latency setting of
   serving/service.py added in turn, with throughput, p50/p99 at concurrency 8 and 32 and the worker's RSS growth.
   This is where the tail came from; what each change bought goes to serving.json `notes.ablation`.
2. The service as configured, against a small trained store built here (synthetic members → features → champion
   models in a private MLflow store → online table): /score by member_id and by inline history, sequential p50/p99
   over ≥ 1,000 requests and wrk at concurrency 8 and 32, next to /echo.

The 5-minute soak is benchmarks/bench_soak.py (`python -m benchmarks.run soak`); both write serving.json.
"""
from __future__ import annotations

import contextlib
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import write_result
from benchmarks.loadgen import ensure_wrk, sequential, wrk
from serving.launch import serve

SERVICE = "member_scoring"
WRK_SECONDS = int(os.environ.get("BENCH_SERVING_SECONDS", "15"))
SEQ_N = int(os.environ.get("BENCH_SERVING_SEQ", "1000"))
ABLATION_SECONDS = int(os.environ.get("BENCH_SERVING_ABLATION_SECONDS", "5"))
ABLATION_ROUNDS = int(os.environ.get("BENCH_SERVING_ABLATION_ROUNDS", "3"))


def _uvloop_blocker(folder: Path) -> Path:
    """A PYTHONPATH folder whose `uvloop` / `httptools` fail to import: uvicorn then falls back to asyncio + h11,
    which is what a BentoML install without `uvicorn[standard]` runs."""
    for name in ("uvloop", "httptools"):
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "__init__.py").write_text(f"raise ImportError('{name} hidden by the serving benchmark')\n")
    return folder


def _bentoml_overrides(timeout: float, access_log: bool, tracing: bool) -> str:
    svc: dict[str, Any] = {"traffic": {"timeout": timeout}, "logging": {"access": {"enabled": access_log}},
                           "tracing": {"excluded_urls": [] if tracing else ["/"]}}
    return json.dumps({"services": {SERVICE: svc}})


def modelless_config(folder: Path) -> Path:
    """A serving config with no models, no online table and no store: the ablation measures /echo only, so its
    servers start in seconds and are ready (readiness needs every *configured* model and table)."""
    path = folder / "echo_only.yaml"
    path.write_text("models: []\nonline_table: null\nstore: null\nmodels_lock: null\n")
    return path


def ablation_variants(blocker: Path, config: Path) -> list[tuple[str, str, dict[str, str]]]:
    """(name, what changed, environment) from BentoML as shipped to this service's settings, cumulatively."""
    stock = {"PYTHONPATH": str(blocker)}
    variants = [
        ("bentoml_defaults", "BentoML 1.4 as shipped: asyncio loop + h11 parser, access log at INFO, OpenTelemetry "
         "middleware recording spans, traffic.timeout 60 s with its per-request timer",
         {**stock, "BENTOML_CONFIG_OVERRIDES": _bentoml_overrides(60, True, True),
          "MEMBER_ML_SERVING_RUNTIME_FIXES": "none"}),
        ("uvloop_httptools", "+ uvloop event loop and httptools HTTP parser (uvicorn picks them when installed)",
         {"BENTOML_CONFIG_OVERRIDES": _bentoml_overrides(60, True, True), "MEMBER_ML_SERVING_RUNTIME_FIXES": "none"}),
        ("no_access_log", "+ logging.access.enabled: false (our own log: no client address, 2xx at DEBUG)",
         {"BENTOML_CONFIG_OVERRIDES": _bentoml_overrides(60, False, True), "MEMBER_ML_SERVING_RUNTIME_FIXES": "none"}),
        ("no_tracing", "+ tracing.excluded_urls: ['/'] (no span per request when no exporter is configured)",
         {"BENTOML_CONFIG_OVERRIDES": _bentoml_overrides(60, False, False), "MEMBER_ML_SERVING_RUNTIME_FIXES": "none"}),
        ("timer_fix", "+ traffic.timeout 10 s and its per-request timer cancelled when the response starts "
         "(serving/runtime.py): dead requests no longer pile up in the loop's timer heap",
         {"BENTOML_CONFIG_OVERRIDES": _bentoml_overrides(10, False, False),
          "MEMBER_ML_SERVING_RUNTIME_FIXES": "timer_leak"}),
        ("gc_freeze", "+ start-up heap frozen out of garbage collection (= the service as shipped)", {}),
    ]
    return [(name, what, {**env, "MEMBER_ML_SERVING_CONFIG": str(config)}) for name, what, env in variants]


def echo_bodies() -> list[bytes]:
    return [json.dumps({"member_id": f"M{i:06d}"}).encode() for i in range(64)]


def measure_endpoint(url: str, bodies: list[bytes], *, seq_n: int, seconds: int,
                     headers: dict[str, str] | None = None) -> dict[str, dict[str, float]]:
    """Sequential, then wrk at 8 and 32 connections (a short warm-up first)."""
    sequential(url, bodies, n=min(200, seq_n), headers=headers)
    out = {"sequential": sequential(url, bodies, n=seq_n, headers=headers)}
    for c in (8, 32):
        out[f"c{c}"] = wrk(url, bodies, connections=c, seconds=seconds, headers=headers)
    return out


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def run_ablation(seconds: int, rounds: int) -> dict[str, Any]:
    """All variants run side by side (one server each) and are measured in interleaved rounds, so that load from
    other processes on this shared machine falls on every variant alike; figures are medians over the rounds.
    RSS is each worker's after warm-up and after all rounds."""
    variants = []
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        blocker = _uvloop_blocker(Path(tmp) / "blocker")
        for name, what, env in ablation_variants(blocker, modelless_config(Path(tmp))):
            srv = stack.enter_context(serve(env, wait_for="/livez", ready_timeout=180))
            wrk(srv.url + "/echo", echo_bodies(), connections=8, seconds=3)
            variants.append((name, what, srv, srv.worker_rss_mib()))
        runs: dict[str, dict[str, list[dict[str, float]]]] = {n: {"c8": [], "c32": []} for n, *_ in variants}
        for rnd in range(rounds):
            for level, conns in (("c8", 8), ("c32", 32)):
                for name, _, srv, _ in variants:
                    runs[name][level].append(wrk(srv.url + "/echo", echo_bodies(), connections=conns,
                                                 seconds=seconds))
            print(f"  ablation round {rnd + 1}/{rounds} done (load average {os.getloadavg()[0]:.1f})", flush=True)
        for name, what, srv, rss0 in variants:
            rss1 = srv.worker_rss_mib()
            r = {"change": what, "worker_rss_mib": [round(rss0, 1), round(rss1, 1)]}
            for level in ("c8", "c32"):
                r[level] = {k: round(_median([x[k] for x in runs[name][level]]), 2)
                            for k in ("rps", "p50_ms", "p99_ms")}
                r[level]["errors"] = sum(x["errors"] for x in runs[name][level])
            results[name] = r
            print(f"  ablation {name:18s} c8 {r['c8']['rps']:7.0f} req/s p99 {r['c8']['p99_ms']:7.1f} ms | c32 "
                  f"{r['c32']['rps']:7.0f} req/s p99 {r['c32']['p99_ms']:7.1f} ms | RSS {rss0:.0f} → {rss1:.0f} MiB",
                  flush=True)
    return results


def service_bodies(env: dict[str, str], n_members: int = 500, n_histories: int = 50) -> dict[str, list[bytes]]:
    """Request bodies per endpoint: many members by id, inline histories, echo."""
    import duckdb

    from benchmarks.serving_store import AS_OF, inline_histories

    con = duckdb.connect(env["MEMBER_ML_ONLINE_TABLE"], read_only=True)
    try:
        ids = [r[0] for r in con.execute(f"SELECT member_id FROM features LIMIT {n_members}").fetchall()]
    finally:
        con.close()
    hist = inline_histories(Path(env["MEMBER_ML_STORE"]), AS_OF, n_histories)
    return {
        "echo": echo_bodies(),
        "score_member_id": [json.dumps({"member_id": m}).encode() for m in ids],
        "score_inline_history": [json.dumps(h).encode() for h in hist],
    }


def _report(out: dict[str, Any], name: str) -> None:
    r = out[name]
    print(f"  {name:22s} seq p50 {r['sequential']['p50_ms']:.2f} p99 {r['sequential']['p99_ms']:.2f} ms | c8 "
          f"{r['c8']['rps']:.0f} req/s p99 {r['c8']['p99_ms']:.1f} | c32 {r['c32']['rps']:.0f} req/s p99 "
          f"{r['c32']['p99_ms']:.1f} ms, errors {r['c8']['errors'] + r['c32']['errors'] + r['sequential']['errors']:.0f}"
          f" (load average {r['load_average']})", flush=True)


def run_service(env: dict[str, str], seconds: int, seq_n: int) -> dict[str, Any]:
    """The service as shipped against the trained store: every endpoint sequentially and under wrk; then /score by
    member_id once more with the start-up precomputation off (every request runs the four models live)."""
    bodies = service_bodies(env)
    out: dict[str, Any] = {}
    with serve(env, ready_timeout=300) as srv:
        rss0 = srv.worker_rss_mib()
        for name, route in (("echo", "/echo"), ("score_member_id", "/score"), ("score_inline_history", "/score")):
            out[name] = measure_endpoint(srv.url + route, bodies[name], seq_n=seq_n, seconds=seconds)
            out[name]["load_average"] = round(os.getloadavg()[0], 2)
            _report(out, name)
        out["worker_rss_mib"] = [round(rss0, 1), round(srv.worker_rss_mib(), 1)]
    with serve({**env, "MEMBER_ML_SERVING_PRECOMPUTE": "0"}, ready_timeout=300) as srv:
        name = "score_member_id_live"
        out[name] = measure_endpoint(srv.url + "/score", bodies["score_member_id"], seq_n=seq_n, seconds=seconds)
        out[name]["load_average"] = round(os.getloadavg()[0], 2)
        _report(out, name)
    return out


def main() -> None:
    ensure_wrk()
    figures: dict[str, float] = {}
    units: dict[str, str] = {}
    notes: dict[str, Any] = {"load_average_at_start": round(os.getloadavg()[0], 2),
                             "machine_note": "2 shared cores: wrk, the server and any other process compete"}
    if os.environ.get("BENCH_SERVING_ABLATION", "1") != "0":
        ablation = run_ablation(ABLATION_SECONDS, ABLATION_ROUNDS)
        notes["ablation"] = ablation
        for name, r in ablation.items():
            for level in ("c8", "c32"):
                figures[f"ablation_{name}_{level}_rps"] = r[level]["rps"]
                figures[f"ablation_{name}_{level}_p99_ms"] = r[level]["p99_ms"]
                units[f"ablation_{name}_{level}_rps"] = "req/s"
                units[f"ablation_{name}_{level}_p99_ms"] = "ms"
    store_dir = os.environ.get("BENCH_SERVING_STORE")
    with tempfile.TemporaryDirectory() as tmp:
        if store_dir:  # a store already built by benchmarks.serving_store.build_trained_store
            from benchmarks.serving_store import served_env

            env = served_env(Path(store_dir))
        else:
            from benchmarks.serving_store import build_trained_store

            print("  building a trained store (1,000 synthetic members, four champion models)", flush=True)
            env = build_trained_store(Path(tmp), members=1000)
        svc = run_service(env, WRK_SECONDS, SEQ_N)
    notes["service"] = svc
    notes["load_average_at_end"] = round(os.getloadavg()[0], 2)
    for name in ("echo", "score_member_id", "score_inline_history", "score_member_id_live"):
        r = svc[name]
        for k in ("p50_ms", "p99_ms"):
            figures[f"{name}_sequential_{k}"] = round(r["sequential"][k], 3)
            units[f"{name}_sequential_{k}"] = "ms"
        figures[f"{name}_sequential_requests"] = r["sequential"]["requests"]
        units[f"{name}_sequential_requests"] = "requests"
        for level in ("c8", "c32"):
            figures[f"{name}_{level}_rps"] = r[level]["rps"]
            units[f"{name}_{level}_rps"] = "req/s"
            for k in ("p50_ms", "p99_ms"):
                figures[f"{name}_{level}_{k}"] = r[level][k]
                units[f"{name}_{level}_{k}"] = "ms"
            figures[f"{name}_{level}_errors"] = r[level]["errors"]
            units[f"{name}_{level}_errors"] = "requests"
    write_result("serving", figures=figures, units=units, notes=notes)


if __name__ == "__main__":
    main()
