"""Ingestion: adapter -> validation -> store (DESIGN §3).

`ingest(source, path, out)` reads a source through its adapter, validates every table (`features.validation`),
refuses the load when a table's share of bad rows exceeds the limit (naming the table, the top rules, counts and
example source rows, and writing nothing), and otherwise writes the store atomically table by table:
`<table>.parquet`, `quarantine/<table>.parquet`, and last `validation_report.json`.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from features.adapters import SourceData, load_source
from features.contract import SCHEMAS, TABLES
from features.store import Store
from features.validation import RULES, SOURCE_ROW, ValidationResult, resolve_as_of, validate


class IngestError(ValueError):
    """The load was refused (too many bad rows, or an unreadable source); nothing was written."""


class IngestConfig(BaseModel):
    """Ingestion settings (YAML: `max_bad_share: 0.05`)."""

    model_config = ConfigDict(extra="forbid")

    max_bad_share: float = Field(0.05, ge=0.0, le=1.0, description="largest tolerated share of bad rows per table")


def load_ingest_config(path: str | Path | None) -> IngestConfig:
    """Read an IngestConfig from YAML (defaults when `path` is None); errors name the field."""
    if path is None:
        return IngestConfig()
    p = Path(path)
    if not p.is_file():
        raise IngestError(f"config file {p} does not exist")
    try:
        return IngestConfig.model_validate(yaml.safe_load(p.read_text(encoding="utf-8")) or {})
    except (yaml.YAMLError, ValidationError) as e:
        raise IngestError(f"config {p} is invalid: {e}") from None


def capabilities(kept: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """What a store can support, derived from its kept rows (e.g. no prices -> no monetary features)."""
    orders = kept.get("orders")
    o = orders if orders is not None else pd.DataFrame(columns=SCHEMAS["orders"].names)
    has_amount = bool(len(o)) and bool(o["amount"].notna().any())
    has_items = bool(o["item_id"].notna().any()) if len(o) else False
    ev = kept.get("events")
    mem = kept.get("members")
    demo_cols = ["age", "gender", "birthday"]
    caps: dict[str, Any] = {
        "monetary": has_amount,
        "ltv": has_amount,
        "spend_tiers": has_amount,
        "points": has_amount,
        "refunds": bool(len(o)) and bool(o["status"].isin(["refunded", "cancelled"]).any()),
        "recommendations": has_items,
        "categories": bool(len(o)) and bool(o["category"].notna().any()),
        "engagement_events": ev is not None and len(ev) > 0,
        "event_types": sorted(ev["type"].dropna().unique().tolist()) if ev is not None else [],
        "demographics": mem is not None and bool(mem[demo_cols].notna().any().any()),
        "birthdays": mem is not None and bool(mem["birthday"].notna().any()),
        "item_catalogue": "items" in kept and len(kept["items"]) > 0,
    }
    caps["unsupported"] = [k for k in ("monetary", "ltv", "spend_tiers", "points", "recommendations",
                                       "engagement_events", "demographics") if not caps[k]]
    return caps


def _refusal(table: str, res: ValidationResult, share: float, limit: float, ignore: set[str]) -> str:
    ranked = sorted(((n, r) for r, n in res.counts.items() if r not in ignore), reverse=True)
    parts = []
    for n, rule in ranked[:3]:
        q = res.quarantine[res.quarantine["rule"] == rule]
        rows = ", ".join(q[SOURCE_ROW].head(5).astype(str))
        parts.append(f"{rule}: {n:,} rows (e.g. source rows {rows}; {q['reason'].iloc[0]})")
    return (
        f"table {table!r}: {share:.1%} of {res.rows_in:,} rows are bad, above the limit of {limit:.1%} "
        f"(--max-bad-share). Top rules: " + "; ".join(parts) + ". Nothing was written."
    )


def validate_source(
    sd: SourceData,
    *,
    as_of: datetime | pd.Timestamp | str | None = None,
    on_step: Callable[[str], None] | None = None,
) -> dict[str, ValidationResult]:
    """Validate every table the adapter produced."""
    results = {}
    for t in TABLES:
        if t not in sd.tables:
            continue
        if on_step:
            on_step(f"validating {t} ({len(sd.tables[t]):,} rows)")
        masks = sd.masks.get(t, {})
        results[t] = validate(sd.tables[t], t, as_of=as_of, non_product=masks.get("non_product_line"),
                              truncated=masks.get("truncated_line"))
    return results


def ingest(
    source: str,
    path: str | Path | list[str | Path] | None,
    out: str | Path,
    *,
    as_of: datetime | pd.Timestamp | str | None = None,
    max_bad_share: float = 0.05,
    mapping: str | Path | None = None,
    on_step: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Ingest `path` (read by the `source` adapter) into the store folder `out`; returns the validation report.

    Raises IngestError (nothing written) when any table's bad-row share exceeds `max_bad_share`; rules the adapter
    declares expected (e.g. guest purchases) are counted but not charged against the limit.
    """
    as_of_ts = resolve_as_of(as_of)
    if on_step:
        on_step(f"reading {source} from {path}")
    sd = load_source(source, path, mapping)
    results = validate_source(sd, as_of=as_of_ts, on_step=on_step)

    tables_report: dict[str, Any] = {}
    for t, res in results.items():
        ignore = set(sd.expected_rules.get(t, {}))
        share = res.bad_share(ignore)
        if share > max_bad_share:
            raise IngestError(_refusal(t, res, share, max_bad_share, ignore))
        tables_report[t] = {**res.summary(), "bad_share": round(share, 6), "expected_rules": sd.expected_rules.get(t, {})}

    kept = {t: r.kept for t, r in results.items()}
    caps = capabilities(kept)
    caps.update(sd.capabilities)
    report = {
        "source": source,
        "path": [str(p) for p in path] if isinstance(path, list) else (str(path) if path is not None else None),
        "as_of": str(as_of_ts),
        "ingested_at": str(pd.Timestamp.now().floor("s")),
        "max_bad_share": max_bad_share,
        "tables": tables_report,
        "rule_order": list(RULES),
        "dropped_columns": sd.dropped_columns,
        "capabilities": caps,
        "notes": sd.notes,
    }

    store = Store(out)
    store.path.mkdir(parents=True, exist_ok=True)
    # a previous report goes first: a store without a report is visibly incomplete while being rewritten
    (store.path / Store.REPORT).unlink(missing_ok=True)
    for t in TABLES:
        if t in results:
            if on_step:
                on_step(f"writing {t}")
            store.write(t, results[t].kept)
            store.write_quarantine(t, results[t].quarantine)
        else:  # stale tables of an earlier load into the same folder would mix two sources
            store.table_path(t).unlink(missing_ok=True)
            (store.path / Store.QUARANTINE / f"{t}.parquet").unlink(missing_ok=True)
    store.write_report(report)
    return report
