"""Spark (local mode) against one machine: writes benchmarks/results/spark.json. Two parts
(`MEMBER_ML_BENCH_SPARK_PARTS`, default "features,batch"; a part not run keeps its earlier figures):

- **features**: the feature definitions on DuckDB and on Spark at 1×, 2×, 4× data, extrapolated to a large Tmall
  store (50M members, 2B order lines). Both engines run the SAME plan (`features.pipeline.compute_features`: the SQL
  definitions, Spark via sqlglot, plus the loyalty ledger, which is pandas on the driver in both cases). Sizes:
  `MEMBER_ML_BENCH_SPARK_SIZES` (comma separated member counts, default 10000,20000,40000).
- **batch**: batch scoring of one store (`MEMBER_ML_BENCH_SPARK_BATCH_MEMBERS`, default 30000) with the four champion
  models, `serving.batch.score_store` (DuckDB + pandas, one process) against `serving.spark_batch.spark_score_store`
  on `local[2]`, each in a fresh subprocess: wall seconds and CPU seconds of the whole process tree (the JVM and the
  Python workers included, sampled with psutil), start-up included. Local mode on 2 cores measures Spark's overhead
  (JVM, Arrow transfers, shuffles, Python workers) against the one-machine path, not how it scales on a cluster.

The machine is shared: the 1-minute load average before and after each measurement is recorded with it; compare CPU
seconds rather than wall seconds.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import write_result

AS_OF = "2025-07-01"
BATCH_AS_OF = "2025-10-01"
TARGET_MEMBERS = 50_000_000
TARGET_LINES = 2_000_000_000
CLUSTER_CORES = 400  # e.g. 50 executors × 8 cores
PARALLEL_EFFICIENCY = 0.6  # shuffle, skew and stragglers on a real cluster vs. perfect linear speed-up
LOCAL_CORES = 2


def _fit(x: list[float], y: list[float]) -> tuple[float, float]:
    """Least-squares y = a + b·x (a: fixed overhead in s, b: seconds per order line)."""
    b, a = np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)
    return float(a), float(b)


def _measured(code: str, cwd: Path) -> tuple[dict, dict[str, float]]:
    """Run `python -c code` (which prints one `RESULT <json>` line); returns (that JSON, {wall_s, cpu_s,
    load_before, load_after}) where cpu_s is user+sys of the process and all its descendants (the Spark JVM and its
    Python workers), each process's last sampled cumulative CPU time (every 0.2 s) plus the reaped children's."""
    import json
    import subprocess
    import sys

    import psutil

    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = psutil.Popen([sys.executable, "-c", code], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        text=True, env={**os.environ, "PYTHONPATH": str(cwd)})
    seen: dict[int, float] = {}

    def sample() -> None:
        try:
            procs = [proc, *proc.children(recursive=True)]
        except psutil.Error:
            return
        for q in procs:
            try:
                c = q.cpu_times()
                seen[q.pid] = max(seen.get(q.pid, 0.0), c.user + c.system + (c.children_user + c.children_system
                                                                              if q.pid != proc.pid else 0.0))
            except psutil.Error:
                pass

    import threading

    out: dict[str, str] = {}
    reader = threading.Thread(target=lambda: out.update(zip(("stdout", "stderr"), proc.communicate())), daemon=True)
    reader.start()
    while reader.is_alive():
        sample()
        reader.join(0.2)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark step failed:\n{out.get('stdout', '')[-2000:]}\n{out.get('stderr', '')[-3000:]}")
    line = next(x for x in out["stdout"].splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT ")), {"wall_s": wall, "cpu_s": sum(seen.values()),
                                                      "load_before": load0, "load_after": os.getloadavg()[0]}


_LOCAL_BATCH = """
import json, time
from pathlib import Path
from features.store import Store
from serving.batch import score_store
from serving.models import load_models
t0 = time.perf_counter()
ms = load_models(['churn', 'ltv', 'timing', 'recs'], 'champion', {uri!r})
t1 = time.perf_counter()
m = score_store(Store({store!r}), {as_of!r}, Path({out!r}), ms, workers=1)
print('RESULT ' + json.dumps({{'members': m['members'], 'pairs': m['replenishment_pairs'],
                               'load_models_s': t1 - t0, 'score_s': time.perf_counter() - t1}}))
"""

_SPARK_BATCH = """
import json, time
from pathlib import Path
from features.spark_engine import local_spark
from features.store import Store
from serving.models import load_models
from serving.spark_batch import spark_score_store
t0 = time.perf_counter()
ms = load_models(['churn', 'ltv', 'timing', 'recs'], 'champion', {uri!r})
spark = local_spark(cores={cores}, shuffle_partitions={partitions})
t1 = time.perf_counter()
m = spark_score_store(spark, Store({store!r}), {as_of!r}, Path({out!r}), ms, chunk_size={chunk})
t2 = time.perf_counter()
spark.stop()
print('RESULT ' + json.dumps({{'members': m['members'], 'pairs': m['replenishment_pairs'], 'buckets': m['buckets'],
                               'start_s': t1 - t0, 'score_s': t2 - t1, 'missing': m['missing_columns']}}))
"""


def batch_part(members: int) -> tuple[dict, dict, dict, dict]:
    """(datasets, figures, units, notes) of the batch-scoring comparison on one store of `members` members."""
    import tempfile

    import pandas as pd

    from benchmarks.serving_store import build_trained_store
    from features.synthetic import generate_to_store

    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="bench_spark_batch_") as tmp:
        work = Path(tmp)
        build_trained_store(work / "models")
        uri = f"sqlite:///{work / 'models' / 'mlflow.db'}"
        store = work / "store"
        generate_to_store(members, 7, store, workers=1)
        import pyarrow.parquet as pq

        n_lines = pq.ParquetFile(store / "orders.parquet").metadata.num_rows
        fmt = {"uri": uri, "store": str(store), "as_of": BATCH_AS_OF}
        lo, lo_m = _measured(_LOCAL_BATCH.format(**fmt, out=str(work / "local")), root)
        chunk = max(1000, -(-members // 4))  # 4 member buckets in the grouped stages (2 per core)
        sp, sp_m = _measured(_SPARK_BATCH.format(**fmt, out=str(work / "spark"), cores=LOCAL_CORES,
                                                 partitions=4 * LOCAL_CORES, chunk=chunk), root)
        if lo["members"] != sp["members"] or lo["pairs"] != sp["pairs"]:
            raise RuntimeError(f"local and Spark batch disagree: {lo} vs {sp}")
        a = pd.read_parquet(work / "local" / "scores.parquet", columns=["member_id", "churn_probability"])
        b = pd.read_parquet(work / "spark" / "scores", columns=["member_id", "churn_probability"])
        diff = float((a.set_index("member_id")["churn_probability"]
                      - b.set_index("member_id")["churn_probability"].reindex(a["member_id"]).to_numpy()).abs().max())
    key = f"batch_{members}"
    datasets = {f"synthetic_batch_{members}": {"members": members, "scored": lo["members"], "order_lines": n_lines,
                                               "replenishment_pairs": lo["pairs"], "as_of": BATCH_AS_OF}}
    figures = {
        f"{key}_local_wall_s": round(lo_m["wall_s"], 1), f"{key}_local_cpu_s": round(lo_m["cpu_s"], 1),
        f"{key}_local_score_s": round(lo["score_s"], 1),
        f"{key}_spark_local2_wall_s": round(sp_m["wall_s"], 1), f"{key}_spark_local2_cpu_s": round(sp_m["cpu_s"], 1),
        f"{key}_spark_local2_score_s": round(sp["score_s"], 1),
        f"{key}_spark_local2_session_start_s": round(sp["start_s"], 1),
        f"{key}_spark_cpu_ratio": round(sp_m["cpu_s"] / lo_m["cpu_s"], 2),
        f"{key}_local_members_per_cpu_s": round(lo["members"] / lo_m["cpu_s"], 1),
        f"{key}_spark_local2_members_per_cpu_s": round(sp["members"] / sp_m["cpu_s"], 1),
        f"{key}_local_load_average_before": round(lo_m["load_before"], 1),
        f"{key}_local_load_average_after": round(lo_m["load_after"], 1),
        f"{key}_spark_local2_load_average_before": round(sp_m["load_before"], 1),
        f"{key}_spark_local2_load_average_after": round(sp_m["load_after"], 1),
        f"{key}_max_churn_probability_diff": diff,
    }
    units = {k: ("s" if k.endswith("_s") else "members per CPU-second" if k.endswith("_per_cpu_s")
                 else "1-min load average" if "load_average" in k
                 else "ratio (Spark CPU ÷ local CPU)" if k.endswith("_ratio") else "probability")
             for k in figures}
    units[f"{key}_local_members_per_cpu_s"] = units[f"{key}_spark_local2_members_per_cpu_s"] = \
        "members per CPU-second"
    notes = {"batch": (
        f"{members:,} synthetic members scored as of {BATCH_AS_OF} by the same four champions (trained on a "
        "120-member store, benchmarks/serving_store.py), every output column including the replenishment reminders. "
        "local = serving.batch.score_store, one process (DuckDB + pandas; the default below 200k members); "
        f"spark_local2 = serving.spark_batch.spark_score_store on local[{LOCAL_CORES}] with "
        f"{4 * LOCAL_CORES} shuffle partitions and {chunk:,} members per grouped pandas call. "
        "*_wall_s / *_cpu_s: the whole subprocess (imports, model loading, JVM start for Spark) and, for CPU, all its "
        "descendants; *_score_s: the scoring call alone (wall). This is Spark's overhead on one small machine "
        "(JVM, py4j, Arrow batches to Python workers, shuffles, Parquet part files), NOT a cluster scaling figure: "
        "on a cluster the per-member work spreads over the executors while this overhead stays per task. "
        "CPU is sampled every 0.2 s per process of the tree (a process living less than that is missed: a lower "
        "bound, close for Spark, whose Python workers are reused). Equal outputs checked: members, reminder pairs, "
        "churn probabilities (max difference recorded)."
    )}
    return datasets, figures, units, notes


def main() -> None:
    parts = {p.strip() for p in os.environ.get("MEMBER_ML_BENCH_SPARK_PARTS", "features,batch").split(",")}
    unknown = parts - {"features", "batch"}
    if unknown:
        raise SystemExit(f"MEMBER_ML_BENCH_SPARK_PARTS: unknown part(s) {sorted(unknown)}; known: features, batch")
    datasets: dict = {}
    figures: dict = {}
    units: dict = {}
    notes: dict = {}
    if "features" in parts:
        for acc, part in zip((datasets, figures, units, notes), features_part()):
            acc.update(part)
    if "batch" in parts:
        members = int(os.environ.get("MEMBER_ML_BENCH_SPARK_BATCH_MEMBERS", "30000"))
        for acc, part in zip((datasets, figures, units, notes), batch_part(members)):
            acc.update(part)
        print(json.dumps({k: v for k, v in figures.items() if k.startswith("batch_")}, indent=1))
    write_result("spark", datasets=datasets, figures=figures, units=units, notes=notes,
                 merge=parts != {"features", "batch"})


def features_part() -> tuple[dict, dict, dict, dict]:
    """(datasets, figures, units, notes) of the feature scaling table (DuckDB and Spark local at 1×, 2×, 4×)."""
    import pyarrow.parquet as pq

    from features.engine import SparkEngine
    from features.pipeline import compute_features
    from features.spark_engine import local_spark
    from features.store import Store
    from features.synthetic import generate_to_store

    sizes = [int(s) for s in os.environ.get("MEMBER_ML_BENCH_SPARK_SIZES", "10000,20000,40000").split(",")]
    spark = local_spark(cores=LOCAL_CORES, shuffle_partitions=8)
    datasets, figures = {}, {}
    lines, duck_s, spark_s = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        warm = Path(tmp) / "warm"
        generate_to_store(300, 1, warm, workers=1)
        compute_features(Store(warm), AS_OF, engine=SparkEngine(spark))  # JVM / codegen warm-up, not measured
        for n in sizes:
            path = Path(tmp) / f"s{n}"
            generate_to_store(n, 7, path, workers=1)
            store = Store(path)
            n_lines = pq.ParquetFile(store.table_path("orders")).metadata.num_rows
            n_events = pq.ParquetFile(store.table_path("events")).metadata.num_rows if store.has("events") else 0
            load0 = os.getloadavg()[0]
            t = time.perf_counter()
            d = compute_features(store, AS_OF)
            td = time.perf_counter() - t
            t = time.perf_counter()
            s = compute_features(store, AS_OF, engine=SparkEngine(spark))
            ts = time.perf_counter() - t
            load1 = os.getloadavg()[0]
            if len(d) != len(s):
                raise RuntimeError(f"{n} members: DuckDB gave {len(d)} rows, Spark {len(s)}")
            datasets[f"synthetic_{n}"] = {"members": n, "order_lines": n_lines, "events": n_events,
                                          "feature_rows": len(d), "load_avg_1m": [round(load0, 1), round(load1, 1)]}
            figures[f"duckdb_features_s_{n}"] = round(td, 2)
            figures[f"spark_local_features_s_{n}"] = round(ts, 2)
            lines.append(n_lines)
            duck_s.append(td)
            spark_s.append(ts)
            print(f"{n} members, {n_lines} lines: duckdb {td:.1f}s  spark {ts:.1f}s  load {load0:.1f}/{load1:.1f}")
    spark.stop()
    da, db = _fit(lines, duck_s)
    sa, sb = _fit(lines, spark_s)
    members_per_line = sizes[-1] / lines[-1]
    figures.update({
        "duckdb_s_per_million_lines": round(db * 1e6, 3),
        "spark_local_s_per_million_lines": round(sb * 1e6, 3),
        "duckdb_overhead_s": round(da, 2),
        "spark_local_overhead_s": round(sa, 2),
        "extrapolated_duckdb_one_machine_h": round(db * TARGET_LINES * LOCAL_CORES / 16 / 3600, 2),
        "extrapolated_spark_cluster_min": round(
            (sb * TARGET_LINES * LOCAL_CORES / (CLUSTER_CORES * PARALLEL_EFFICIENCY) + sa) / 60, 1),
    })
    notes = {
        "what": "compute_features (SQL definitions + loyalty ledger) at as_of " + AS_OF,
        "fit": "time = overhead + slope × order lines, least squares over the three sizes, per engine",
        "extrapolation_target": f"{TARGET_MEMBERS:,} members / {TARGET_LINES:,} order lines "
                                f"(synthetic stores have ~{1 / members_per_line:.0f} lines per member, the target 40)",
        "assumptions": [
            "cost is linear in order lines (every step is a scan, a group-by on member_id or a per-member window: "
            "no step is super-linear; member-level joins are one row per member)",
            f"DuckDB one machine: a 16-core box with enough disk to spill, the measured per-core rate (here on "
            f"{LOCAL_CORES} shared cores) scaled by 16/{LOCAL_CORES}",
            f"Spark cluster: {CLUSTER_CORES} cores at {PARALLEL_EFFICIENCY:.0%} parallel efficiency vs. the local "
            f"per-core rate; local mode includes py4j/Arrow collection to the driver, which on a cluster is "
            "replaced by writing Parquet from the executors",
            "the loyalty ledger (pandas, per member) is part of both timings; on a cluster it must run per member "
            "partition (mapInPandas/applyInPandas), otherwise it is the driver bottleneck: the extrapolation "
            "assumes it is distributed like the SQL",
            "the machine is shared with other engineers' jobs (see load_avg_1m per dataset): absolute times are "
            "pessimistic; the slopes are the useful figures",
        ],
    }
    units = {k: ("h" if k.endswith("_h") else "min" if k.endswith("_min") else "s") for k in figures}
    return datasets, figures, units, notes


if __name__ == "__main__":
    main()
