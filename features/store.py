"""A *store*: a folder of contract tables as Parquet (DESIGN §3), plus atomic writers used by every output."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from features.contract import REQUIRED_TABLES, SCHEMAS, conform


class StoreError(ValueError):
    """A store folder is missing, incomplete or unreadable."""


def _umask_mode() -> int:
    """The permission bits a normally created file would get (mkstemp makes files 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_target(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`, on any error remove it.

    Readers never see a partial file: the rename is atomic on one filesystem.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (temporary file in the same folder, then rename)."""
    with atomic_target(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(Path(path), json.dumps(obj, indent=2, ensure_ascii=False, default=str).encode("utf-8"))


def atomic_write_parquet(df: pd.DataFrame, path: Path) -> None:
    """Write a DataFrame as Parquet atomically (temporary file, then rename)."""
    with atomic_target(path) as tmp:
        df.to_parquet(tmp, index=False)


def atomic_write_csv(df: pd.DataFrame, path: Path) -> None:
    """Write a DataFrame as CSV atomically (temporary file, then rename)."""
    with atomic_target(path) as tmp:
        df.to_csv(tmp, index=False)


class Store:
    """A folder of contract tables. Only `orders` is required; other tables are optional."""

    REPORT = "validation_report.json"
    QUARANTINE = "quarantine"

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    def table_path(self, table: str) -> Path:
        if table not in SCHEMAS:
            raise StoreError(f"unknown table {table!r}; tables: {sorted(SCHEMAS)}")
        return self.path / f"{table}.parquet"

    def has(self, table: str) -> bool:
        return self.table_path(table).exists()

    def tables(self) -> list[str]:
        return [t for t in SCHEMAS if self.has(t)]

    def check(self) -> "Store":
        """Raise a clear error if this is not a usable store."""
        if not self.path.is_dir():
            raise StoreError(f"store folder {self.path} does not exist (create one with `member-ml generate` or `member-ml ingest`)")
        for t in REQUIRED_TABLES:
            if not self.has(t):
                raise StoreError(f"store {self.path} has no {t}.parquet (required table)")
        return self

    def read(self, table: str, columns: list[str] | None = None) -> pd.DataFrame:
        """Read one table, conformed to the contract (all contract columns, typed)."""
        p = self.table_path(table)
        if not p.exists():
            raise StoreError(f"store {self.path} has no {table}.parquet")
        df = pd.read_parquet(p, columns=columns)
        if columns is None:
            df = conform(df, SCHEMAS[table])
        return df

    def read_optional(self, table: str) -> pd.DataFrame | None:
        return self.read(table) if self.has(table) else None

    def write(self, table: str, df: pd.DataFrame) -> Path:
        """Conform `df` to the contract and write it atomically."""
        p = self.table_path(table)
        atomic_write_parquet(conform(df, SCHEMAS[table]), p)
        return p

    def write_quarantine(self, table: str, df: pd.DataFrame) -> Path:
        p = self.path / self.QUARANTINE / f"{table}.parquet"
        atomic_write_parquet(df, p)
        return p

    def read_quarantine(self, table: str) -> pd.DataFrame | None:
        p = self.path / self.QUARANTINE / f"{table}.parquet"
        return pd.read_parquet(p) if p.exists() else None

    def report(self) -> dict[str, Any] | None:
        p = self.path / self.REPORT
        return json.loads(p.read_text(encoding="utf-8")) if p.exists() else None

    def write_report(self, report: dict[str, Any]) -> Path:
        p = self.path / self.REPORT
        atomic_write_json(p, report)
        return p

    def fingerprint(self) -> str:
        """A short hash of the table files' names, sizes and modification times (cheap; changes when data changes)."""
        h = hashlib.sha256()
        for t in self.tables():
            st = self.table_path(t).stat()
            h.update(f"{t}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()[:16]
