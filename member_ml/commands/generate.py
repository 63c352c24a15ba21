"""`member-ml generate`: write a synthetic store (with ground truth) for demos, tests and benchmarks."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("generate")(generate_command)


def generate_command(
    members: Annotated[int, typer.Option("--members", help="Number of members to simulate (about 20 order lines each).")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write (orders/members/events/items.parquet + ground truth).")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed: the same seed and options give the same store.")] = 7,
    messy: Annotated[bool, typer.Option(
        "--messy", help="Write raw tables with a known number of bad rows per validation rule "
        "(messy_injections.json); ingest them with `member-ml ingest --source parquet`.")] = False,
    start: Annotated[str, typer.Option("--start", help="First day of activity (YYYY-MM-DD).")] = "2024-01-01",
    end: Annotated[str, typer.Option("--end", help="Last day of activity, inclusive (YYYY-MM-DD).")] = "2025-12-31",
    workers: Annotated[int | None, typer.Option(
        "--workers", help="Worker processes (default: CPU count, at most 4). Never changes the data.")] = None,
) -> None:
    """Generate a synthetic shop: members, orders, events, items, plus ground_truth*.parquet for oracle comparisons."""
    import time

    import numpy as np
    from member_ml.console import console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from features.synthetic import generate_to_store
    from features.synthetic.generator import default_workers
    from member_ml.console import fail, table

    if members < 1:
        fail(f"--members must be at least 1, got {members}")
    for name, value in (("--start", start), ("--end", end)):
        try:
            np.datetime64(value, "D")
        except ValueError:
            fail(f"{name} must be a date YYYY-MM-DD, got {value!r}")
    if np.datetime64(end, "D") < np.datetime64(start, "D"):
        fail(f"--end {end} is before --start {start}")
    if workers is not None and workers < 1:
        fail(f"--workers must be at least 1, got {workers}")
    con = console()
    t0 = time.perf_counter()
    with Progress(TextColumn("generating {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=con, transient=False) as progress:
        task = progress.add_task(f"{members:,} members", total=None)

        def on_chunk(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        try:
            meta = generate_to_store(members, seed, out, start=start, end=end, messy=messy,
                                     workers=workers or default_workers(), on_chunk=on_chunk)
        except (ValueError, OSError) as e:
            fail(str(e))
    secs = time.perf_counter() - t0
    con.print(table(f"synthetic store {out} (seed {seed}, {meta['start']} .. {meta['end']}, {secs:.1f} s)",
                    [{"table": t, "rows": n} for t, n in meta["rows"].items()]))
    if messy:
        import json

        inj = json.loads((Path(out) / "messy_injections.json").read_text(encoding="utf-8"))
        con.print(table("injected bad rows (raw tables; ingest quarantines them)",
                        [{"rule": r, "rows": k} for r, k in inj.items()]))
    con.print("ground truth: ground_truth.parquet (per member), ground_truth_cycles.parquet (member x category)")
