"""Rich console helpers shared by the commands: tidy tables and clear errors."""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import typer
from rich.console import Console
from rich.table import Table


LOG_WIDTH = 160  # columns when output goes to a file or CI log: rich's default of 80 wraps every word of wide tables


def console() -> Console:
    """The commands' console: the terminal's width, or LOG_WIDTH when stdout is not a terminal (COLUMNS still wins)."""
    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else LOG_WIDTH
    return Console(width=width)


def table(title: str, rows: Iterable[Mapping[str, Any]], columns: list[str] | None = None) -> Table:
    rows = list(rows)
    cols = columns or (list(rows[0].keys()) if rows else [])
    t = Table(title=title, show_lines=False)
    for c in cols:
        t.add_column(str(c), overflow="fold")
    for r in rows:
        t.add_row(*[_fmt(r.get(c)) for c in cols])
    return t


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return "" if v is None else str(v)


def fail(message: str, code: int = 2) -> None:
    """Print a clear error (no traceback) and exit non-zero."""
    Console(stderr=True).print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)
