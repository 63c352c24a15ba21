"""Scaling of the feature definitions on DuckDB and on Spark (local mode) at 1×, 2×, 4× data, extrapolated to a
large Tmall store (50M members, 2B order lines). Writes benchmarks/results/spark.json.

Both engines run the SAME plan (`features.pipeline.compute_features`: the SQL definitions, Spark via sqlglot, plus
the loyalty ledger, which is pandas on the driver in both cases). Sizes: `MEMBER_ML_BENCH_SPARK_SIZES` (comma
separated member counts, default 10000,20000,40000). The machine is shared and heavily loaded: the 1-minute load
average before and after each measurement is recorded with it.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import write_result

AS_OF = "2025-07-01"
TARGET_MEMBERS = 50_000_000
TARGET_LINES = 2_000_000_000
CLUSTER_CORES = 400  # e.g. 50 executors × 8 cores
PARALLEL_EFFICIENCY = 0.6  # shuffle, skew and stragglers on a real cluster vs. perfect linear speed-up
LOCAL_CORES = 2


def _fit(x: list[float], y: list[float]) -> tuple[float, float]:
    """Least-squares y = a + b·x (a: fixed overhead in s, b: seconds per order line)."""
    b, a = np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)
    return float(a), float(b)


def main() -> None:
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
    write_result("spark", datasets=datasets, figures=figures,
                 units={k: ("h" if k.endswith("_h") else "min" if k.endswith("_min") else "s") for k in figures},
                 notes=notes, merge=False)


if __name__ == "__main__":
    main()
