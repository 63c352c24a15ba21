"""Write a generated store to a folder: the four tables, ground truth beside them, and (messy) the injection counts."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.contract import SCHEMAS
from features.store import Store, atomic_write_bytes, atomic_write_json, atomic_write_parquet
from features.synthetic.generator import (
    CHUNK_MEMBERS,
    DEFAULT_END,
    DEFAULT_START,
    SyntheticData,
    _meta,
    arrow_schema,
    catalogue_for,
    chunk_specs,
    default_workers,
    generate,
    iter_chunks,
)

GROUND_TRUTH = "ground_truth.parquet"
GROUND_TRUTH_CYCLES = "ground_truth_cycles.parquet"
INJECTIONS = "messy_injections.json"
INJECTIONS_BY_TABLE = "messy_injections_by_table.json"
META = "synthetic.json"


def parquet_options(schema: pa.Schema) -> dict[str, Any]:
    """Snappy; dictionary encoding for repetitive string columns, not for order_id (nearly unique: wasted work)."""
    dict_cols = [f.name for f in schema if pa.types.is_string(f.type) and f.name != "order_id"]
    return {"compression": "snappy", "use_dictionary": dict_cols}


def write_arrow_parquet(tab: pa.Table, path: Path) -> None:
    """Write an Arrow table as Parquet atomically (serialised in memory, then `atomic_write_bytes`)."""
    sink = pa.BufferOutputStream()
    pq.write_table(tab, sink, row_group_size=1 << 20, **parquet_options(tab.schema))
    atomic_write_bytes(Path(path), sink.getvalue().to_pybytes())


def write_store(data: SyntheticData, out: str | Path) -> Store:
    """Write `data` into the folder `out`.

    Clean data: `<table>.parquet` with exactly the contract columns and types (Arrow-written: the same columns and
    types `Store.write` produces, without a pandas round trip on tens of millions of rows). Messy data: the raw
    tables (bad rows included, timestamp / money columns as strings) plus `messy_injections.json` ({rule: count}) and
    `messy_injections_by_table.json`. Always: `ground_truth.parquet`, `ground_truth_cycles.parquet`, `synthetic.json`.
    """
    store = Store(out)
    store.path.mkdir(parents=True, exist_ok=True)
    if data.raw is not None:
        for t, tab in data.raw.items():
            write_arrow_parquet(tab, store.table_path(t))
        atomic_write_json(store.path / INJECTIONS, data.injection_counts())
        atomic_write_json(store.path / INJECTIONS_BY_TABLE, data.injections)
    else:
        for t, tab in data.tables.items():
            if tab.schema != arrow_schema(t):
                raise ValueError(f"table {t!r} does not match the contract: {tab.schema} vs {SCHEMAS[t].names}")
            write_arrow_parquet(tab, store.table_path(t))
        for stale in (INJECTIONS, INJECTIONS_BY_TABLE):
            (store.path / stale).unlink(missing_ok=True)
    _write_side_files(store, data.ground_truth, data.ground_truth_cycles, data.meta)
    return store


def _write_side_files(store: Store, ground_truth: pd.DataFrame, cycles: pd.DataFrame, meta: dict[str, Any]) -> None:
    atomic_write_parquet(ground_truth, store.path / GROUND_TRUTH)
    atomic_write_parquet(cycles, store.path / GROUND_TRUTH_CYCLES)
    atomic_write_json(store.path / META, meta)


def generate_to_store(
    n_members: int,
    seed: int,
    out: str | Path,
    *,
    start: str = DEFAULT_START,
    end: str = DEFAULT_END,
    messy: bool = False,
    workers: int | None = None,
    chunk_members: int = CHUNK_MEMBERS,
    on_chunk: Callable[[int, int], None] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Generate and write a store in one go; returns the metadata written to `synthetic.json`.

    Clean stores stream: each chunk is appended to `<table>.parquet.tmp` files as it arrives (bounded memory, writing
    overlaps generation in the worker processes) and the files are renamed into place at the end (atomic per file).
    Messy stores are built in memory (bad rows are spread over whole tables), then written by `write_store`.
    The data are identical to `generate(...)` with the same arguments.
    """
    if messy:
        data = generate(n_members, seed, start=start, end=end, messy=True, workers=workers,
                        chunk_members=chunk_members, on_chunk=on_chunk, on_step=on_step)
        write_store(data, out)
        return data.meta
    specs = chunk_specs(n_members, seed, start, end, chunk_members)
    cat = catalogue_for(n_members, seed)
    store = Store(out)
    store.path.mkdir(parents=True, exist_ok=True)
    tables = ("members", "orders", "events")
    tmp = {t: Path(tempfile.mkstemp(prefix=f".{t}.parquet.", suffix=".tmp", dir=store.path)[1]) for t in tables}
    writers = {t: pq.ParquetWriter(tmp[t], arrow_schema(t), **parquet_options(arrow_schema(t))) for t in tables}
    gts, cycles, parts, rows = [], [], [], dict.fromkeys(tables, 0)
    try:
        for res in iter_chunks(specs, cat, default_workers() if workers is None else workers):
            for t in tables:
                writers[t].write_table(res.tables[t], row_group_size=1 << 20)
                rows[t] += res.tables[t].num_rows
            gts.append(res.ground_truth)
            cycles.append(res.cycles)
            res.tables.clear()
            parts.append(res)
            if on_chunk:
                on_chunk(len(parts), len(specs))
            if on_step:
                on_step(f"members chunk {len(parts)}/{len(specs)} written")
        for w in writers.values():
            w.close()
        for t in tables:
            os.replace(tmp[t], store.table_path(t))
    except BaseException:
        for w in writers.values():
            try:
                w.close()
            except Exception:  # noqa: BLE001 - cleanup after the original error, which is re-raised
                pass
        for f in tmp.values():
            f.unlink(missing_ok=True)
        raise
    items = cat.table()
    write_arrow_parquet(items, store.table_path("items"))
    rows["items"] = items.num_rows
    for stale in (INJECTIONS, INJECTIONS_BY_TABLE):
        (store.path / stale).unlink(missing_ok=True)
    meta = _meta(n_members, seed, specs, parts, rows, False, chunk_members)
    _write_side_files(store, pd.concat(gts, ignore_index=True), pd.concat(cycles, ignore_index=True), meta)
    return meta
