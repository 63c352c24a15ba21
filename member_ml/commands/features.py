"""`member-ml features` (point-in-time features at a cutoff), `member-ml training-set` (many cutoffs + labels) and
`member-ml online build` (the online feature table for serving)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

online_app = typer.Typer(help="Online feature table used by serving.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("features")(features_command)
    app.command("training-set")(training_set_command)
    online_app.command("build")(online_build_command)
    app.add_typer(online_app, name="online")


StoreOpt = Annotated[Path, typer.Option("--store", help="Store folder (orders.parquet and optional tables).")]


def _open_store(path: Path):  # noqa: ANN202
    from features.store import Store, StoreError
    from member_ml.console import fail

    try:
        return Store(path).check()
    except StoreError as e:
        fail(str(e))


def features_command(
    store: StoreOpt,
    as_of: Annotated[str, typer.Option("--as-of", help="Cutoff date: features use rows strictly before it.")],
    out: Annotated[Path, typer.Option("--out", help="Parquet file to write (a .manifest.json is written next to it).")],
    engine: Annotated[str, typer.Option(help="duckdb (one machine) or spark (the same definitions on Spark; --out "
                                        "is then a folder of Parquet part files).")] = "duckdb",
    spark_master: Annotated[str | None, typer.Option(
        "--spark-master",
        help="With --engine spark: Spark master URL (default: spark-submit's, else local[*]).")] = None,
) -> None:
    """Compute every member's features as of a cutoff; write Parquet plus a manifest."""
    import time

    from member_ml.console import console

    from features.pipeline import FEATURE_VERSION, categorical_features, compute_features
    from features.store import atomic_write_json, atomic_write_parquet
    from features.training_set import manifest_path, source_fingerprint
    from member_ml.console import fail, table

    if engine not in ("duckdb", "spark"):
        fail(f"--engine must be duckdb or spark, got {engine!r}")
    s = _open_store(store)
    if engine == "spark":
        _features_on_spark(s, as_of, out, spark_master)
        return
    con = console()
    t0 = time.perf_counter()
    try:
        with con.status(f"computing features as of {as_of}…"):
            df = compute_features(s, as_of)
    except ValueError as e:
        fail(str(e))
    secs = time.perf_counter() - t0
    feats = [c for c in df.columns if c != "member_id"]
    manifest = {**source_fingerprint(s), "as_of": df.attrs["as_of"], "feature_version": FEATURE_VERSION,
                "definitions": df.attrs["definitions"], "features": feats,
                "categorical_features": [c for c in categorical_features(df.attrs["tables"]) if c in feats],
                "rows": int(len(df))}
    atomic_write_parquet(df, out)
    atomic_write_json(manifest_path(out), manifest)
    con.print(table("features", [{"members": len(df), "features": len(feats), "as_of": df.attrs["as_of"],
                                  "tables": ", ".join(df.attrs["tables"]), "seconds": round(secs, 2)}]))
    con.print(f"written [bold]{out}[/] and {manifest_path(out).name}")


def _features_on_spark(store, as_of: str, out: Path, master: str | None) -> None:  # noqa: ANN001
    """`member-ml features --engine spark`: serving.spark_batch.spark_features written by Spark (never collected) into
    a folder replacing `out` only when complete, plus the same manifest as the DuckDB path."""
    import shutil
    import tempfile
    import time

    from member_ml.console import console

    from features.definitions import definitions_digest
    from features.engine import as_timestamp
    from features.pipeline import FEATURE_VERSION, categorical_features
    from features.spark_engine import submit_or_local_spark
    from features.store import atomic_write_json
    from features.training_set import manifest_path, source_fingerprint
    from member_ml.console import fail, table
    from serving.batch import replace_dir
    from serving.spark_batch import spark_features

    try:
        t = as_timestamp(as_of, "--as-of")
    except ValueError as e:
        fail(str(e))
    try:
        from pyspark.sql import SparkSession

        owned = SparkSession.getActiveSession() is None  # a caller's session (notebook, tests) is left running
        spark = submit_or_local_spark(master, "member-ml features")
    except ImportError as e:
        fail(str(e))
    con = console()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    t0 = time.perf_counter()
    try:
        with con.status(f"computing features as of {t.date()} on Spark ({spark.sparkContext.master})…"):
            sf = spark_features(spark, store, t)
            sf.frame.write.parquet(str(tmp / "data"))
        feats = [c for c in sf.frame.columns if c != "member_id"]
        manifest = {**source_fingerprint(store), "as_of": t.isoformat(), "feature_version": FEATURE_VERSION,
                    "definitions": definitions_digest(sf.tables), "features": feats,
                    "categorical_features": [c for c in categorical_features(sf.tables) if c in feats],
                    "rows": sf.members, "engine": "spark"}
        replace_dir(tmp / "data", out)
    except ValueError as e:
        fail(str(e))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if owned:
            spark.stop()
    atomic_write_json(manifest_path(out), manifest)
    con.print(table("features (spark)", [{"members": sf.members, "features": len(feats), "as_of": t.isoformat(),
                                          "tables": ", ".join(sorted(sf.tables)),
                                          "seconds": round(time.perf_counter() - t0, 2)}]))
    con.print(f"written [bold]{out}[/] (a folder of Parquet part files) and {manifest_path(out).name}")


def training_set_command(
    store: StoreOpt,
    start: Annotated[str, typer.Option("--start", help="First monthly cutoff (rounded up to a month start).")],
    end: Annotated[str, typer.Option("--end", help="Last monthly cutoff (inclusive).")],
    out: Annotated[Path, typer.Option("--out", help="Parquet file to write (plus .manifest.json).")],
    churn_horizon: Annotated[int, typer.Option(help="Churn label horizon in days.")] = 90,
    ltv_horizon: Annotated[int, typer.Option(help="LTV label horizon in days.")] = 365,
    timing_horizon: Annotated[int, typer.Option(help="Next-purchase censoring horizon in days.")] = 180,
    strict: Annotated[bool, typer.Option(
        "--strict/--allow-truncated-labels",
        help="Refuse cutoffs whose label windows run past the last order (default), or accept truncated labels.")] = True,
) -> None:
    """Stack features and labels at monthly cutoffs into one training set (label windows must fit in the data)."""
    from member_ml.console import console
    from rich.progress import Progress

    from features.labels import LabelWindowError
    from features.training_set import build_training_set, monthly_cutoffs
    from member_ml.console import fail, table

    s = _open_store(store)
    try:
        cuts = monthly_cutoffs(start, end)
    except ValueError as e:
        fail(str(e))
    con = console()
    try:
        with Progress(console=con, transient=True) as progress:
            task = progress.add_task("cutoffs", total=len(cuts))
            ts = build_training_set(s, cuts, churn_horizon=churn_horizon, ltv_horizon=ltv_horizon,
                                    timing_horizon=timing_horizon, strict=strict,
                                    progress=lambda c: progress.advance(task))
    except (LabelWindowError, ValueError) as e:
        fail(str(e))
    ts.write(out)
    con.print(table("training set", [{"cutoff": c, "rows": n} for c, n in ts.manifest["rows_per_cutoff"].items()]))
    con.print(f"written [bold]{out}[/]: {ts.manifest['rows']} rows, {len(ts.feature_columns)} features")


def online_build_command(
    store: StoreOpt,
    as_of: Annotated[str, typer.Option("--as-of", help="Cutoff: features use rows strictly before it.")],
    out: Annotated[Path, typer.Option("--out", help="DuckDB file to write (features, recent_items, meta).")],
) -> None:
    """Materialize the latest features and recent items per member for online lookups."""
    import time

    from member_ml.console import console

    from features.online import OnlineFeatureTable, materialize
    from member_ml.console import fail, table

    s = _open_store(store)
    con = console()
    t0 = time.perf_counter()
    try:
        with con.status("materializing online features…"):
            path = materialize(s, as_of, out)
    except ValueError as e:
        fail(str(e))
    tbl = OnlineFeatureTable(path)
    con.print(table("online feature table", [{"members": len(tbl), "features": len(tbl.feature_names),
                                               "recent item rows": tbl.recent_item_rows, "as_of": tbl.meta["as_of"],
                                               "seconds": round(time.perf_counter() - t0, 2)}]))
    con.print(f"written [bold]{path}[/]")
