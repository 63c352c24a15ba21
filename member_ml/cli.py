"""The `member-ml` command line. Each command group lives in `member_ml/commands/<name>.py` with a `register(app)`.

Heavy libraries are imported inside the commands so that `--help` stays instant.
"""
from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="member-ml",
    help="Member intelligence for online-shop loyalty programmes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

@app.callback()
def _main() -> None:
    """Member intelligence for online-shop loyalty programmes."""


# Command modules, in the order they appear in --help.
COMMAND_MODULES: tuple[str, ...] = (
    "generate",
    "ingest",
    "features",
    "models",
    "loyalty",
    "serve",
    "score",
    "campaign",
)

for _name in COMMAND_MODULES:
    importlib.import_module(f"member_ml.commands.{_name}").register(app)


@app.command()
def version() -> None:
    """Print the installed member-ml version."""
    from importlib.metadata import version as _v

    typer.echo(_v("member-ml"))


if __name__ == "__main__":  # pragma: no cover
    app()
