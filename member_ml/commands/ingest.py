"""`member-ml ingest` (validate a source into a store) and `member-ml summary` (what a store holds)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

SOURCE_HELP = "csv, parquet, completejourney, online-retail, taobao-userbehavior or taobao-orders"


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest_command)
    app.command("summary")(summary_command)


def ingest_command(
    source: Annotated[str, typer.Option("--source", help=f"Source format: {SOURCE_HELP}.")],
    out: Annotated[Path, typer.Option("--out", help="Store folder to write (tables, quarantine/, validation_report.json).")],
    path: Annotated[list[Path] | None, typer.Option(
        "--path", help="Input file or folder (repeat for several Online Retail files; not needed for completejourney).")] = None,
    as_of: Annotated[str | None, typer.Option(
        "--as-of", help="Timestamps after this are quarantined as future_timestamp (default: now).")] = None,
    max_bad_share: Annotated[float | None, typer.Option(
        "--max-bad-share", help="Refuse the load if a table has more bad rows than this share (default 0.05 or --config).")] = None,
    mapping: Annotated[Path | None, typer.Option("--mapping", help="YAML column mapping for --source csv/parquet.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML ingestion config (max_bad_share).")] = None,
) -> None:
    """Validate a source and write it as a store; bad rows go to quarantine/ with their reasons."""
    from member_ml.console import console

    from features.adapters import SourceError
    from features.ingest import IngestError, ingest, load_ingest_config
    from member_ml.console import fail

    try:
        cfg = load_ingest_config(config)
    except IngestError as e:
        fail(str(e))
    limit = cfg.max_bad_share if max_bad_share is None else max_bad_share
    if not 0.0 <= limit <= 1.0:
        fail(f"--max-bad-share must be between 0 and 1, got {limit}")
    p: Any = None if not path else (path[0] if len(path) == 1 else list(path))
    con = console()
    try:
        with con.status("ingesting…") as status:
            report = ingest(source, p, out, as_of=as_of, max_bad_share=limit, mapping=mapping,
                            on_step=lambda msg: status.update(msg))
    except (IngestError, SourceError, ValueError) as e:
        fail(str(e))
    _print_report(con, report)
    con.print(f"store written to [bold]{out}[/]")


def summary_command(
    store: Annotated[Path, typer.Option("--store", help="Store folder to summarise.")],
) -> None:
    """Print what a store holds: row counts, date range, members, paid/refunded, and its validation report."""
    from member_ml.console import console

    from features.store import Store, StoreError
    from member_ml.console import fail, table

    try:
        st = Store(store).check()
    except StoreError as e:
        fail(str(e))
    con = console()
    rows = []
    for t in st.tables():
        df = st.read(t)
        ts = "ordered_at" if t == "orders" else "occurred_at" if t == "events" else None
        rows.append({
            "table": t,
            "rows": len(df),
            "members": int(df["member_id"].nunique()) if "member_id" in df else None,
            "from": str(df[ts].min()) if ts and len(df) else "",
            "to": str(df[ts].max()) if ts and len(df) else "",
        })
    con.print(table(f"store {store}", rows))
    orders = st.read("orders")
    status_rows = []
    for s, g in orders.groupby("status", observed=True):
        status_rows.append({
            "status": s, "lines": len(g), "orders": int(g["order_id"].nunique()),
            "members": int(g["member_id"].nunique()),
            "amount": float(g["amount"].sum()) if g["amount"].notna().any() else None,
        })
    con.print(table("orders by status", status_rows))
    report = st.report()
    if report is None:
        con.print("[yellow]no validation_report.json (the store was not written by `member-ml ingest`)[/]")
    else:
        _print_report(con, report)


def _print_report(con: Any, report: dict[str, Any]) -> None:
    from member_ml.console import table

    con.print(f"source [bold]{report.get('source')}[/] · as-of {report.get('as_of')}")
    rows = []
    for t, r in report["tables"].items():
        rows.append({
            "table": t, "rows_in": r["rows_in"], "kept": r["rows_kept"], "quarantined": r["rows_quarantined"],
            "bad share": f"{r.get('bad_share', 0):.2%}",
        })
    con.print(table("validation", rows))
    rule_rows = []
    for t, r in report["tables"].items():
        expected = r.get("expected_rules", {})
        for rule, n in r["rules"].items():
            rule_rows.append({"table": t, "rule": rule, "rows": n, "note": "expected for this source" if rule in expected else ""})
        for name, n in r.get("outliers", {}).items():
            if n:
                rule_rows.append({"table": t, "rule": f"outlier: {name}", "rows": n, "note": "kept, counted"})
    if rule_rows:
        con.print(table("quarantine rules", rule_rows))
    caps = report.get("capabilities", {})
    if caps.get("unsupported"):
        con.print(f"[yellow]not supported by this store:[/] {', '.join(caps['unsupported'])}")
    if report.get("dropped_columns"):
        con.print(f"personal columns dropped at the edge: {', '.join(report['dropped_columns'])}")
