"""Taobao UserBehavior (Tianchi dataset 649) onto the contract.

Lines are `user_id,item_id,category_id,behavior,unix_ts` (no header; a header line is skipped if present).

- pv / cart / fav -> events of type view / cart / favorite (item_id kept).
- buy -> orders rows: order_id = "<user_id>-<unix_ts>" (the data has no order ids; buys of one user in the same
  second are one order), quantity 1, status paid, category = category_id, and **amount null**: the data has no
  prices and none is invented. The report's capabilities then say monetary features, LTV, spend tiers and points
  are not supported for this store.
- Unix seconds are converted to Asia/Shanghai local time (naive), the shop's clock.
- A line with fewer than five fields (the last line of a byte-cut file) is quarantined as `truncated_line`.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd

from features.adapters import SourceData, SourceError, require_path
from features.contract import ITEM_ID, MEMBER_ID, OCCURRED_AT, ORDER_ID, ORDERED_AT
from features.validation import SOURCE_ROW

FIELDS = ("user_id", "item_id", "category_id", "behavior", "ts")
TIMEZONE = "Asia/Shanghai"


def _pick_file(p: Path) -> Path:
    if p.is_file():
        return p
    csvs = sorted(p.glob("*.csv")) or sorted(p.glob("*.csv.gz"))
    if len(csvs) != 1:
        raise SourceError(f"taobao-userbehavior: expected one .csv (or .csv.gz) in {p}, found {[c.name for c in csvs]}; pass the file")
    return csvs[0]


def load(path: str | Path | None) -> SourceData:
    """Read a UserBehavior CSV into raw events (pv/cart/fav) and orders (buy) frames."""
    f = _pick_file(require_path(path, "--source taobao-userbehavior"))
    data = f.read_bytes()
    if f.suffix == ".gz":
        data = gzip.decompress(data)
    text = data.decode("utf-8-sig", errors="replace")
    lines = pd.Series(text.splitlines(), dtype="string")
    line_no = pd.Series(np.arange(1, len(lines) + 1))
    keep = (lines.str.strip() != "").to_numpy(dtype=bool, na_value=False)
    if len(lines) and not lines.iloc[0].split(",")[0].strip().isdigit():
        keep[0] = False  # header
    lines, line_no = lines[keep].reset_index(drop=True), line_no[keep].reset_index(drop=True)
    if lines.empty:
        raise SourceError(f"{f}: no data lines")
    parts = lines.str.split(",", n=len(FIELDS) - 1, expand=True)
    for i in range(len(FIELDS)):
        if i not in parts.columns:
            parts[i] = pd.NA
    parts = parts[list(range(len(FIELDS)))]
    parts.columns = list(FIELDS)
    parts = parts.apply(lambda c: c.str.strip())
    truncated = (lines.str.count(",") < len(FIELDS) - 1).to_numpy(dtype=bool, na_value=True)

    secs = pd.to_numeric(parts["ts"], errors="coerce")
    when = pd.to_datetime(secs, unit="s", utc=True).dt.tz_convert(TIMEZONE).dt.tz_localize(None)
    # keep unparseable raw text visible to validation (as a string) rather than a silent NaT
    stamp = when.astype("string").where(secs.notna(), parts["ts"])
    behavior = parts["behavior"].str.lower()
    is_buy = (behavior == "buy").to_numpy(dtype=bool, na_value=False)
    src = f.name + ":" + line_no.astype("string")

    ev = ~is_buy
    events = pd.DataFrame({
        MEMBER_ID: parts["user_id"][ev],
        OCCURRED_AT: stamp[ev],
        "type": behavior[ev],  # pv / fav are mapped to view / favorite by validation (EVENT_SPELLINGS)
        ITEM_ID: parts["item_id"][ev],
        "category_id": parts["category_id"][ev],
        "raw_timestamp": parts["ts"][ev],
        SOURCE_ROW: src[ev],
    }).reset_index(drop=True)
    orders = pd.DataFrame({
        ORDER_ID: parts["user_id"][is_buy] + "-" + parts["ts"][is_buy],
        MEMBER_ID: parts["user_id"][is_buy],
        ORDERED_AT: stamp[is_buy],
        ITEM_ID: parts["item_id"][is_buy],
        "category": parts["category_id"][is_buy],
        "quantity": 1.0,
        "status": "paid",
        "raw_timestamp": parts["ts"][is_buy],
        SOURCE_ROW: src[is_buy],
    }).reset_index(drop=True)
    return SourceData(
        source="taobao-userbehavior",
        tables={"orders": orders, "events": events},
        masks={"events": {"truncated_line": truncated[ev]}, "orders": {"truncated_line": truncated[is_buy]}},
        capabilities={
            "prices": False,
            "why_not_monetary": "the source has no prices: amounts stay null (never invented), so monetary "
                                "features, LTV, spend tiers and points are not supported for this store",
        },
        notes={"file": str(f), "timezone": TIMEZONE, "lines": int(len(lines)),
               "order_id": "user_id-unix_ts (the source has no order ids)"},
    )
