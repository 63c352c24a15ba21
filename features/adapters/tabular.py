"""Generic CSV / Parquet adapter, with an optional YAML column mapping (pydantic-validated).

Without a mapping, a folder holds `<table>.csv` / `<table>.parquet` per contract table, already in contract column
names (a single file is read as `orders`). With a mapping, each table names its file and which source column feeds
each contract column:

```yaml
tables:
  orders:
    file: sales.csv            # relative to --path (a folder) or omitted when --path is the file itself
    columns:                   # contract column: source column
      order_id: 订单号
      member_id: customer
      ordered_at: created
      amount: paid
    constants:                 # optional fixed values, e.g. a store whose export holds only paid lines
      status: paid
encoding: auto                 # auto (UTF-8, UTF-8 with BOM or GBK/GB18030, detected) or a codec name
```

CSV text decodes as UTF-8 (with or without BOM) or GBK (read as GB18030, its superset), detected from the bytes.
Columns that look like personal contact data are dropped at the edge and listed in the report; a mapping that
points a contract column at such a column is refused.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from features.adapters import SourceData, SourceError, drop_personal, is_personal, require_path
from features.contract import SCHEMAS
from features.validation import SOURCE_ROW


class TableMapping(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: str | None = None
    columns: dict[str, str] = Field(default_factory=dict)
    constants: dict[str, str | float | int | bool] = Field(default_factory=dict)


class ColumnMapping(BaseModel):
    """A YAML column mapping: per contract table, the file and the source column for each contract column."""

    model_config = ConfigDict(extra="forbid")

    tables: dict[str, TableMapping]
    encoding: str = "auto"

    @field_validator("tables")
    @classmethod
    def _known(cls, v: dict[str, TableMapping]) -> dict[str, TableMapping]:
        for table, tm in v.items():
            if table not in SCHEMAS:
                raise ValueError(f"unknown table {table!r}; tables: {sorted(SCHEMAS)}")
            names = SCHEMAS[table].names
            for c in [*tm.columns, *tm.constants]:
                if c not in names:
                    raise ValueError(f"tables.{table}: {c!r} is not a contract column of {table}; columns: {names}")
            for c, src in tm.columns.items():
                if is_personal(src):
                    raise ValueError(
                        f"tables.{table}.columns.{c}: source column {src!r} looks like personal contact data; "
                        "map a pseudonymous id instead (personal data is never stored)"
                    )
        return v


def load_mapping(path: str | Path) -> ColumnMapping:
    """Read and validate a YAML column mapping; errors name the field."""
    p = Path(path)
    if not p.is_file():
        raise SourceError(f"mapping file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
        return ColumnMapping.model_validate(data)
    except (yaml.YAMLError, ValidationError) as e:
        raise SourceError(f"mapping {p} is invalid: {e}") from None


def detect_encoding(data: bytes) -> str:
    """'utf-8-sig' for a UTF-8 BOM, 'utf-8' if the bytes decode as UTF-8, else 'gb18030' (GBK superset)."""
    if data.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        data.decode("gb18030")
        return "gb18030"
    except UnicodeDecodeError:
        raise SourceError("CSV is neither UTF-8 nor GBK/GB18030; re-save it as UTF-8") from None


def read_csv_text(path: str | Path, encoding: str = "auto", **kwargs: object) -> tuple[pd.DataFrame, str]:
    """Read a CSV as strings (blank -> null) with encoding detection; returns (frame, encoding used)."""
    data = Path(path).read_bytes()
    enc = detect_encoding(data) if encoding == "auto" else encoding
    try:
        text = data.decode(enc)
    except (UnicodeDecodeError, LookupError) as e:
        raise SourceError(f"{path}: cannot decode as {enc}: {e}") from None
    df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""], **kwargs)
    df.columns = [str(c).strip() for c in df.columns]
    return df, enc


def read_table_file(path: Path, encoding: str = "auto") -> tuple[pd.DataFrame, str | None]:
    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path), None
    if path.suffix.lower() in (".csv", ".txt", ".tsv"):
        return read_csv_text(path, encoding, sep="\t" if path.suffix.lower() == ".tsv" else ",")
    raise SourceError(f"{path}: unsupported file type {path.suffix!r} (use .csv or .parquet)")


def _find(folder: Path, table: str, fmt: str) -> Path | None:
    exts = (".parquet",) if fmt == "parquet" else (".csv",) if fmt == "csv" else (".parquet", ".csv")
    for ext in exts:
        p = folder / f"{table}{ext}"
        if p.exists():
            return p
    return None


def load(path: str | Path | None, mapping: str | Path | ColumnMapping | None = None,
         fmt: Literal["csv", "parquet"] | str = "parquet") -> SourceData:
    """Read contract tables from a folder or file, applying `mapping` if given."""
    root = require_path(path, f"--source {fmt}")
    cm = load_mapping(mapping) if isinstance(mapping, (str, Path)) else mapping
    files: dict[str, Path] = {}
    if cm is None:
        if root.is_file():
            files["orders"] = root
        else:
            for t in SCHEMAS:
                f = _find(root, t, fmt)
                if f is not None:
                    files[t] = f
    else:
        for t, tm in cm.tables.items():
            if tm.file is None:
                if not root.is_file():
                    raise SourceError(f"mapping tables.{t}.file is not set and --path {root} is a folder")
                files[t] = root
            else:
                f = root / tm.file if root.is_dir() else root.parent / tm.file
                if not f.exists():
                    raise SourceError(f"mapping tables.{t}.file: {f} does not exist")
                files[t] = f
    if "orders" not in files:
        raise SourceError(f"{root}: no orders table found (expected orders.{fmt} in the folder, or a mapping for orders)")

    tables: dict[str, pd.DataFrame] = {}
    dropped: list[str] = []
    unused: dict[str, list[str]] = {}
    encodings: dict[str, str] = {}
    for t, f in files.items():
        df, enc = read_table_file(f, cm.encoding if cm else "auto")
        if enc:
            encodings[t] = enc
        tm = cm.tables.get(t) if cm else None
        keep = set(tm.columns.values()) if tm else set()
        df, d = drop_personal(df, keep=keep)
        dropped += [f"{f.name}:{c}" for c in d]
        if tm is not None:
            missing = [src for src in tm.columns.values() if src not in df.columns]
            if missing:
                raise SourceError(f"{f.name}: mapped source column(s) {missing} not found; columns: {list(df.columns)}")
            out = pd.DataFrame({c: df[src] for c, src in tm.columns.items()})
            for c, v in tm.constants.items():
                out[c] = v
        else:
            out = df[[c for c in df.columns if c in SCHEMAS[t].names]].copy()
        unused[t] = [str(c) for c in df.columns if c not in set(out.columns) and c not in keep]
        # amount may be absent (a source without prices: never invented; the report says monetary is unsupported)
        missing_req = [c for c in SCHEMAS[t].required if c not in out.columns and c != "amount"]
        if missing_req:
            raise SourceError(
                f"{f.name}: required column(s) {missing_req} of table {t!r} are missing; columns: {list(df.columns)}"
                " (rename them or give a --mapping)"
            )
        # 1-based data line numbers for CSV (header is line 1), 0-based row index for Parquet
        start = 2 if f.suffix.lower() != ".parquet" else 0
        out[SOURCE_ROW] = f.name + ":" + pd.Series(range(start, start + len(out)), index=out.index).astype("string")
        tables[t] = out
    return SourceData(
        source=fmt,
        tables=tables,
        dropped_columns=dropped,
        notes={"files": {t: str(f) for t, f in files.items()}, "encodings": encodings, "unused_columns": unused},
    )
