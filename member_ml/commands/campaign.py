"""`member-ml campaign build | evaluate`: target lists from batch scores, and their uplift once outcomes arrive."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

campaign_app = typer.Typer(help="Campaign audiences from batch scores, and their evaluation.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    campaign_app.command("build")(build_command)
    campaign_app.command("evaluate")(evaluate_command)
    app.add_typer(campaign_app, name="campaign")


def build_command(
    scores: Annotated[Path, typer.Option("--scores", help="Folder written by `member-ml score`.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write: one Parquet per audience, summary, "
                                      "campaign.json.")],
    audiences: Annotated[Path | None, typer.Option("--audiences", help="Campaign YAML (default: the shipped "
                                                   "serving/campaigns/audiences.yaml).")] = None,
) -> None:
    """Build the audiences (win-back, replenishment, tier upgrade, points expiry, birthday, onboarding, content)."""
    from member_ml.console import console, fail, table
    from serving.batch import BatchError, read_replenishment, read_scores
    from serving.campaigns.audiences import build_campaign, summary_rows
    from serving.campaigns.config import CampaignConfigError, load_campaign
    from serving.campaigns.files import write_campaign

    try:
        cfg = load_campaign(audiences)
        s, manifest = read_scores(scores)
        c = build_campaign(s, read_replenishment(scores), cfg, manifest.get("as_of"))
    except (CampaignConfigError, BatchError, ValueError) as e:
        fail(str(e))
    write_campaign(c, out, config=cfg.model_dump(mode="json"), scores_manifest=manifest)
    con = console()
    short = {"audience": "audience", "priority": "prio", "eligible": "eligible", "no_consent": "no consent",
             "in_earlier_audience": "in earlier", "capped": "capped", "members": "members", "treated": "treated",
             "control": "control", "value": f"value {cfg.currency}", "expected_cost": f"cost {cfg.currency}"}
    rows = [{short[k]: v for k, v in r.items() if k in short} for r in summary_rows(c)]
    con.print(table(f"campaign {cfg.name!r}: send {c.meta['send_date']}, {c.meta['members_scored']:,} members "
                    f"scored, {c.meta['no_consent']:,} without marketing consent", rows, list(short.values())))
    con.print(f"written [bold]{out}[/]: {len(c.summary)} audience files, summary.parquet/.csv, campaign.json")


def evaluate_command(
    campaign: Annotated[Path, typer.Option("--campaign", help="Folder written by `member-ml campaign build`.")],
    store: Annotated[Path, typer.Option("--store", help="Store with the orders placed after the send date.")],
    out: Annotated[Path, typer.Option("--out", help="Result file: .parquet, .csv or .json.")],
    days: Annotated[int | None, typer.Option(help="Outcome window in days after the send date "
                                             "(default: the campaign's measure_days).")] = None,
) -> None:
    """Per audience: conversion and revenue per member, treated vs control; uplift with 95% intervals; ROI."""
    from features.store import Store, StoreError, atomic_write_csv, atomic_write_json, atomic_write_parquet
    from member_ml.console import console, fail, table
    from serving.campaigns.evaluate import evaluate_campaign, table_rows
    from serving.campaigns.files import CampaignFilesError, read_campaign

    if out.suffix not in (".parquet", ".csv", ".json"):
        fail(f"--out must end in .parquet, .csv or .json, got {out.name!r}")
    try:
        s = Store(store).check()
        rows, meta = read_campaign(campaign)
        window = days or int(meta.get("measure_days", 14))
        res = evaluate_campaign(rows, s, meta["send_date"], window, list(meta["audiences"]))
    except (StoreError, CampaignFilesError, ValueError) as e:
        fail(str(e))
    if out.suffix == ".parquet":
        atomic_write_parquet(res, out)
    elif out.suffix == ".csv":
        atomic_write_csv(res, out)
    else:
        atomic_write_json(out, {"send_date": meta["send_date"], "days": window,
                                "audiences": res.to_dict("records")})
    console().print(table(f"campaign {meta.get('name')!r}: outcomes {meta['send_date']} + {window} days",
                          table_rows(res)))
    console().print(f"written [bold]{out}[/]")
