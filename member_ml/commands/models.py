"""`member-ml train | evaluate | promote | rollback | models`: train, backtest and manage registered models.

The commands are model-agnostic: a model type plugs in by adding its trainer module to `training.trainers.TRAINERS`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from member_ml.console import console, fail, table

StoreOpt = Annotated[Path, typer.Option("--store", help="Store folder (orders.parquet, …).")]
CutoffOpt = Annotated[str | None, typer.Option(help="Cutoff date YYYY-MM-DD (features before it, labels from it).")]
HorizonOpt = Annotated[int | None, typer.Option(help="Label horizon in days (default: the model's).")]
ConfigOpt = Annotated[Path | None, typer.Option(help="YAML file with the trainer's settings.")]


def _model_arg(name: str) -> Any:
    from training import trainers

    try:
        return trainers.load(name)
    except trainers.UnknownModel as e:
        fail(str(e.args[0]))


def _store(path: Path) -> Any:
    from features.store import Store, StoreError

    try:
        return Store(path).check()
    except StoreError as e:
        fail(str(e))


def _progress() -> Any:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console(),
                    transient=False)


def _print_evaluation(ev: Any, title: str) -> None:
    c = console()
    c.print(table(title, ev.table_rows(), ev.columns()))
    split = ", ".join(f"{k} {v}" for k, v in ev.split.items())
    c.print(f"split: {split}")
    if ev.best_baseline:
        c.print(f"gain interval over the best baseline by {ev.primary}: [bold]{ev.best_baseline}[/]")
    for n in ev.notes:
        c.print(f"note: {n}")


def register(app: typer.Typer) -> None:
    @app.command()
    def train(
        model: Annotated[str, typer.Argument(help="Model to train (churn, ltv, …).")],
        store: StoreOpt,
        cutoff: CutoffOpt = None,
        horizon: HorizonOpt = None,
        config: ConfigOpt = None,
        promote: Annotated[bool, typer.Option(help="Run the champion gate after registering.")] = True,
    ) -> None:
        """Train on stacked monthly cutoffs, backtest, log to MLflow, register a version and run the promotion gate."""
        from member_ml.settings import Settings

        trainer = _model_arg(model)
        st = _store(store)
        try:
            with _progress() as progress:
                out = trainer.train(st, settings=Settings(), cutoff=cutoff, horizon=horizon, config=config,
                                    promote=promote, progress=progress)
        except (ValueError, RuntimeError) as e:
            fail(f"{model}: {e}")
        c = console()
        c.print(table(f"{model}: backtest of run {out.run_id[:8]}", [{"metric": k, "value": v}
                                                                     for k, v in out.metrics.items()]))
        c.print(f"registered [bold]{model}[/] version {out.version}")
        if out.promotion is not None:
            c.print(("[green]promoted[/]: " if out.promotion.promoted else "[yellow]not promoted[/]: ")
                    + out.promotion.reason)
        for n in out.notes:
            c.print(f"note: {n}")

    @app.command()
    def evaluate(
        model: Annotated[str, typer.Argument(help="Model to backtest (churn, ltv, …).")],
        store: StoreOpt,
        cutoff: Annotated[str, typer.Option(help="Test cutoff YYYY-MM-DD: train on earlier cutoffs, test here.")],
        horizon: HorizonOpt = None,
        config: ConfigOpt = None,
        out: Annotated[Path | None, typer.Option(help="Write the results JSON (DESIGN §10 format) here.")] = None,
        dataset: Annotated[str | None, typer.Option(help="Dataset name in the JSON (default: store folder name).")] = None,
        baselines: Annotated[bool, typer.Option(help="Compute the baselines (BG/NBD needs the [bench] extra).")] = True,
    ) -> None:
        """Backtest: train on cutoffs before CUTOFF, test at CUTOFF, print model vs baselines (logs nothing)."""
        from training.evaluation import write_results

        trainer = _model_arg(model)
        st = _store(store)
        try:
            with _progress() as progress:
                ev = trainer.evaluate(st, cutoff=cutoff, horizon=horizon, config=config, baselines=baselines,
                                      progress=progress)
        except (ValueError, RuntimeError) as e:
            fail(f"{model}: {e}")
        _print_evaluation(ev, f"{model} backtest on {st.path.name}")
        if out is not None:
            p = write_results(out, dataset or st.path.name, ev)
            console().print(f"wrote {p}")

    @app.command("promote")
    def promote_cmd(
        model: Annotated[str, typer.Argument(help="Registered model name.")],
        version: Annotated[str | None, typer.Option(help="Version to promote (default: the latest).")] = None,
        force: Annotated[bool, typer.Option(help="Promote without comparing (use with care).")] = False,
    ) -> None:
        """Set alias `champion` on a version only if it beats the current champion on the same backtest data."""
        from member_ml.settings import Settings
        from training import registry, tracking

        trainer = _model_arg(model)
        tracking.configure(Settings())
        try:
            r = registry.promote(trainer.SPEC, version, force=force)
        except registry.RegistryError as e:
            fail(str(e))
        console().print(("[green]promoted[/]: " if r.promoted else "[yellow]not promoted[/]: ") + r.reason)

    @app.command()
    def rollback(model: Annotated[str, typer.Argument(help="Registered model name.")]) -> None:
        """Restore the previous champion of MODEL."""
        from member_ml.settings import Settings
        from training import registry, tracking

        tracking.configure(Settings())
        try:
            r = registry.rollback(model)
        except registry.RegistryError as e:
            fail(str(e))
        console().print(r.reason)

    @app.command()
    def models() -> None:
        """List registered models: versions, latest, champion and its backtest metric."""
        from member_ml.settings import Settings
        from training import registry, tracking

        uri = tracking.configure(Settings())
        rows = registry.list_models()
        if not rows:
            console().print(f"no registered models in {uri} (train one: member-ml train churn --store S)")
            return
        console().print(table(f"registered models ({uri})", rows))
