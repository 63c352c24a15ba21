"""Spark for the feature definitions: one place that builds a SparkSession configured for them.

The engine itself is `features.engine.SparkEngine` (the same plans as DuckDB, every statement transpiled by sqlglot
duckdb → spark). What matters for equal answers is the session: UTC session time zone (timestamps in the store are
naive UTC wall times; DuckDB treats them the same way), ANSI mode off (DuckDB's `x / 0` never reaches here because
the definitions use NULLIF, but Spark 4 turns ANSI on by default and would fail casts DuckDB allows), and
Arrow-backed `toPandas()`. Needs the `spark` extra (`pip install member-ml[spark]`) and Java 17+.

`local_spark(...)` is for local mode (tests, one machine); on a cluster, `spark-submit` provides the master and
`spark_session()` only adds the settings the definitions need.
"""
from __future__ import annotations

import os
import sys
from typing import Any

#: settings the feature definitions need on any cluster (equal answers to DuckDB)
REQUIRED_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.ansi.enabled": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.parquet.datetimeRebaseModeInRead": "CORRECTED",
    "spark.sql.parquet.int96RebaseModeInRead": "CORRECTED",
    # DECIMAL ÷ integer keeps its full scale as in DuckDB (Spark's default cuts it to 6 digits: category_entropy
    # came out 4e-10 off, enough to flip a LightGBM split in batch scoring on Spark)
    "spark.sql.decimalOperations.allowPrecisionLoss": "false",
}

#: settings for a small local session (tests, benchmarks on one machine)
LOCAL_CONF: dict[str, str] = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.adaptive.enabled": "true",
    "spark.driver.memory": "2g",
}

#: for tiny data (tests): start-up and query compilation dominate, so skip whole-stage code generation, adaptive
#: re-planning and the JIT's optimising tier (measured 88 s → 30 s for the first feature run on a loaded 2-core box)
FAST_START_CONF: dict[str, str] = {
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.adaptive.enabled": "false",
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
}


def spark_session(app_name: str = "member-ml", conf: dict[str, str] | None = None, master: str | None = None) -> Any:
    """Get or create a SparkSession with `REQUIRED_CONF` (plus `conf`); `master` only when given (spark-submit
    sets it otherwise). Raises ImportError with the install hint when pyspark is absent."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("the spark engine needs pyspark: pip install 'member-ml[spark]' (and Java 17+)") from exc
    # the Python workers must be this interpreter (the venv), not whatever `python3` is on PATH
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    for k, v in {**REQUIRED_CONF, **(conf or {})}.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def local_spark(cores: int = 2, shuffle_partitions: int = 4, app_name: str = "member-ml-local", *,
                fast_start: bool = False, conf: dict[str, str] | None = None) -> Any:
    """A local-mode session: `local[cores]`, few shuffle partitions (small data), UI off, quiet logs;
    `fast_start` for tiny data such as tests (`FAST_START_CONF`)."""
    return spark_session(app_name, {**LOCAL_CONF, **(FAST_START_CONF if fast_start else {}),
                                    "spark.sql.shuffle.partitions": str(shuffle_partitions),
                                    "spark.default.parallelism": str(shuffle_partitions), **(conf or {})},
                         master=f"local[{int(cores)}]")


def submit_or_local_spark(master: str | None = None, app_name: str = "member-ml") -> Any:
    """The session for a command-line run: `master` when given; else the master `spark-submit` provides; else
    local mode on every core (`local[*]`, with `LOCAL_CONF`)."""
    try:
        import pyspark  # noqa: F401 - only to fail early with the install hint
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("--engine spark needs pyspark: pip install 'member-ml[spark]' (and Java 17+)") from exc
    # spark-submit starts this interpreter with the gateway to its JVM already running (and the master set there)
    if master is None and "PYSPARK_GATEWAY_PORT" not in os.environ:
        master = "local[*]"
    local = master is not None and master.startswith("local")
    return spark_session(app_name, LOCAL_CONF if local else None, master=master)
