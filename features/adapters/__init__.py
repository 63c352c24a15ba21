"""Adapters: map foreign formats onto the data contract's column names (values stay raw; `features.validation` judges them).

Each adapter module exposes `load(path, mapping=None) -> SourceData`. `load_source(name, ...)` picks one by name
(imported lazily, so the CLI stays fast). Every adapter drops personal contact data at the edge (`drop_personal`).
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# --source name -> module in this package
SOURCES: dict[str, str] = {
    "csv": "tabular",
    "parquet": "tabular",
    "completejourney": "completejourney",
    "online-retail": "online_retail",
    "taobao-userbehavior": "taobao_userbehavior",
    "taobao-orders": "taobao_orders",
}


class SourceError(ValueError):
    """The source cannot be read or mapped (missing file, missing column, bad mapping)."""


@dataclass
class SourceData:
    """What an adapter hands to ingestion.

    tables: raw frames per contract table, in contract column names (plus optional context columns and `source_row`).
    masks: per table, extra boolean masks for source-specific rules (`non_product_line`, `truncated_line`).
    expected_rules: rules whose rows are an expected property of the source rather than defects (e.g. guest
      purchases without a customer id in Online Retail); they are quarantined and counted, but not charged
      against the bad-row limit. Rule -> why.
    dropped_columns: personal / unused source columns dropped at the edge (never stored).
    capabilities: overrides of what the store supports (ingestion derives the rest from the kept data).
    notes: facts about the load worth keeping in the report (files read, rows skipped by design, ...).
    """

    source: str
    tables: dict[str, pd.DataFrame]
    masks: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    expected_rules: dict[str, dict[str, str]] = field(default_factory=dict)
    dropped_columns: list[str] = field(default_factory=list)
    capabilities: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


# Column names that hold personal contact data (names, phones, addresses, emails, identity numbers).
_PERSONAL_EN = re.compile(
    r"(phone|mobile|cell_?no|telephone|(^|_)tel($|_)|e_?mail|address|street|post_?code|zip(_?code)?$|"
    r"surname|first_?name|last_?name|full_?name|given_?name|family_?name|customer_?name|buyer_?name|"
    r"recipient|receiver|consignee|contact|id_?card|passport|national_?id|ssn|^name$)"
)
_PERSONAL_ZH = re.compile(r"(收货人|收件人|姓名|手机|电话|地址|邮箱|身份证|联系|真实名|支付宝账号)")


def is_personal(column: str) -> bool:
    """True if a column name looks like personal contact data."""
    norm = re.sub(r"[\s\-\.]+", "_", str(column).strip().lower())
    return bool(_PERSONAL_EN.search(norm) or _PERSONAL_ZH.search(str(column)))


def drop_personal(df: pd.DataFrame, keep: set[str] | frozenset[str] = frozenset()) -> tuple[pd.DataFrame, list[str]]:
    """Drop columns that look like personal contact data (except `keep`); returns (frame, dropped names)."""
    dropped = [c for c in df.columns if c not in keep and is_personal(c)]
    return df.drop(columns=dropped), [str(c) for c in dropped]


def load_source(source: str, path: str | Path | list[str | Path] | None,
                mapping: str | Path | None = None) -> SourceData:
    """Run the adapter for `source` (one of SOURCES) on `path` (a list only for online-retail)."""
    if source not in SOURCES:
        raise SourceError(f"unknown source {source!r}; choose one of: {', '.join(SOURCES)}")
    mod = importlib.import_module(f"features.adapters.{SOURCES[source]}")
    if SOURCES[source] == "tabular":
        if isinstance(path, list):
            raise SourceError(f"--source {source} takes one --path (a folder or a file), got {len(path)}")
        return mod.load(path, mapping=mapping, fmt=source)
    if mapping is not None:
        raise SourceError(f"--mapping applies to --source csv/parquet only, not {source!r}")
    if isinstance(path, list) and source != "online-retail":
        raise SourceError(f"--source {source} takes one --path, got {len(path)}")
    return mod.load(path)


def require_path(path: str | Path | None, what: str) -> Path:
    if path is None:
        raise SourceError(f"--path is required for {what}")
    p = Path(path)
    if not p.exists():
        raise SourceError(f"{what}: path {p} does not exist")
    return p
