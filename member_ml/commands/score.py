"""`member-ml score`: every member of a store scored by the champion models and the loyalty rules (batch)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("score")(score_command)


def _terminate_cleanly() -> None:
    """Turn SIGTERM (a job scheduler stopping the run) into an exception, so the temporary output is removed as
    on Ctrl-C: an interrupted run leaves no partial output."""
    import signal

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def score_command(
    store: Annotated[Path, typer.Option("--store", help="Store folder (orders.parquet and optional tables).")],
    as_of: Annotated[str, typer.Option("--as-of", help="Scoring date: features use rows strictly before it.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write (scores, replenishment, manifest.json); "
                                      "replaced only when the run completes.")],
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv (lists joined with '|').")] = "parquet",
    chunk_size: Annotated[int, typer.Option("--chunk-size", help="Members scored together (bounds memory).")] = 50_000,
    top_n: Annotated[int, typer.Option("--top-n", help="Recommendations per member.")] = 10,
    models: Annotated[str, typer.Option(help="Comma-separated registered models to use.")] = "churn,ltv,timing,recs",
    alias: Annotated[str, typer.Option(help="Registry alias to load.")] = "champion",
    workers: Annotated[int | None, typer.Option(help="Processes scoring chunks in parallel (default: one per CPU "
                                                "core, at most 2, for stores of 200,000 members or more).")] = None,
    engine: Annotated[str, typer.Option(help="duckdb (one machine) or spark (serving/spark_batch.py: writes "
                                        "scores/ as Parquet partitioned by value segment).")] = "duckdb",
    spark_master: Annotated[str | None, typer.Option(
        "--spark-master",
        help="With --engine spark: Spark master URL (default: spark-submit's, else local[*]).")] = None,
) -> None:
    """Score every member: tier, points, benefits, segments, churn with reasons, LTV, next purchase, recommendations."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from features.store import Store, StoreError
    from member_ml.console import console, fail, table
    from member_ml.settings import Settings
    from serving.batch import BatchError, score_store
    from serving.models import load_models

    names = [m.strip() for m in models.split(",") if m.strip()]
    unknown = sorted(set(names) - {"churn", "ltv", "timing", "recs"})
    if unknown:
        fail(f"--models: unknown model(s) {unknown}; choose from churn, ltv, timing, recs")
    if fmt not in ("parquet", "csv"):
        fail(f"--format must be parquet or csv, got {fmt!r}")
    if engine not in ("duckdb", "spark"):
        fail(f"--engine must be duckdb or spark, got {engine!r}")
    if engine == "spark" and fmt != "parquet":
        fail("--engine spark writes parquet only (drop --format csv)")
    try:
        s = Store(store).check()
    except StoreError as e:
        fail(str(e))
    c = console()
    _terminate_cleanly()
    uri = Settings().resolved_tracking_uri()
    with c.status(f"loading {alias} models from {uri}…"):
        ms = load_models(names, alias, uri)
    if ms.unavailable:
        fail("cannot score: " + "; ".join(f"{k}: {v}" for k, v in ms.unavailable.items()))
    if engine == "spark":
        _score_on_spark(s, as_of, out, ms, top_n=top_n, chunk_size=chunk_size, master=spark_master)
        return
    try:
        with Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TextColumn("members"),
                      TimeElapsedColumn(), console=c, transient=True) as progress:
            task = progress.add_task("scoring", total=None)
            manifest = score_store(s, as_of, out, ms, fmt=fmt, chunk_size=chunk_size, top_n=top_n, workers=workers,
                                   tracking_uri=uri,
                                   progress=lambda done, total: progress.update(task, completed=done,
                                                                                total=max(total, done)))
    except (BatchError, ValueError) as e:
        fail(str(e))
    sec = manifest["seconds"]
    c.print(table("batch scores", [{
        "members": manifest["members"], "as_of": manifest["as_of"][:10],
        "models": ", ".join(f"{k} v{v['version']}" for k, v in manifest["models"].items()),
        "reminder pairs": manifest["replenishment_pairs"], "seconds": sec["total"],
        "members/s": manifest["members_per_second"]}]))
    c.print(f"time: features {sec['features']:.1f} s, models {sec['models']:.1f} s, writing {sec['writing']:.1f} s")
    c.print(f"written [bold]{out}[/] ({manifest['files']['scores']}, {manifest['files']['replenishment']}, "
            "manifest.json)")


def _score_on_spark(store, as_of: str, out: Path, models, *, top_n: int, chunk_size: int,  # noqa: ANN001
                    master: str | None) -> None:
    """`member-ml score --engine spark`: serving.spark_batch on a session from spark-submit or local mode."""
    from features.spark_engine import submit_or_local_spark
    from member_ml.console import console, fail, table
    from serving.batch import BatchError
    from serving.spark_batch import spark_score_store

    c = console()
    try:
        from pyspark.sql import SparkSession

        owned = SparkSession.getActiveSession() is None  # a caller's session (notebook, tests) is left running
        spark = submit_or_local_spark(master, "member-ml score")
    except ImportError as e:
        fail(str(e))
    try:
        with c.status(f"scoring on Spark ({spark.sparkContext.master})…"):
            manifest = spark_score_store(spark, store, as_of, out, models, top_n=top_n, chunk_size=chunk_size)
    except (BatchError, ValueError) as e:
        fail(str(e))
    finally:
        if owned:
            spark.stop()
    sec = manifest["seconds"]
    c.print(table("batch scores (spark)", [{
        "members": manifest["members"], "as_of": manifest["as_of"][:10],
        "models": ", ".join(f"{k} v{v['version']}" for k, v in manifest["models"].items()),
        "master": manifest["spark_master"], "seconds": sec["total"], "members/s": manifest["members_per_second"]}]))
    missing = manifest["missing_columns"]
    c.print(f"written [bold]{out}[/] (scores/ partitioned by {', '.join(manifest['partition_by'])}, "
            f"{manifest['files']['replenishment'] or 'no replenishment'} with {manifest['replenishment_pairs'] or 0:,} "
            "reminder pairs, manifest.json)" + (f"; not produced on Spark: {', '.join(missing)}" if missing else ""))
