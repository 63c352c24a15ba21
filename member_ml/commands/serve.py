"""`member-ml serve import`: pin the champion models into BentoML's model store for the online service."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

serve_app = typer.Typer(help="Online scoring service (BentoML): model import.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    serve_app.command("import")(import_command)
    app.add_typer(serve_app, name="serve")


def import_command(
    lock: Annotated[Path | None, typer.Option("--lock", help="Lock file to write (default: the serving config's "
                                              "models_lock, serving/models.lock.yaml).")] = None,
    alias: Annotated[str | None, typer.Option(help="Registry alias to resolve (default: the serving config's, "
                                              "champion).")] = None,
) -> None:
    """Resolve each served model's alias to a version, import it into BentoML's store, write the pinned tags.

    The service then loads these exact versions from BentoML's store (no registry needed at run time), and
    `bentoml build` packs them into the Bento. Run it again after a promotion or a rollback.
    """
    from member_ml.console import console, fail, table
    from member_ml.settings import Settings
    from serving.config import ServingConfigError, load_serving_config
    from serving.import_models import import_champions, write_lock

    try:
        cfg = load_serving_config()
    except ServingConfigError as e:
        fail(str(e))
    uri = cfg.tracking_uri or Settings().resolved_tracking_uri()
    target = lock or cfg.resolve(cfg.models_lock)
    if target is None:
        fail("no lock file: pass --lock or set models_lock in the serving config")
    try:
        pinned = import_champions(cfg.models, alias or cfg.alias, uri)
    except LookupError as e:
        fail(str(e).strip("'\""))
    write_lock(target, pinned)
    console().print(table("pinned models", [{"model": p.name, "alias": p.alias, "version": p.version,
                                             "bentoml tag": p.tag} for p in pinned]))
    console().print(f"written [bold]{target}[/]")
