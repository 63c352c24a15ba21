"""Engines that run the feature definitions (features/definitions/): DuckDB by default, Spark later.

A *plan* is an ordered list of named SQL steps (plain SELECTs in DuckDB's dialect, kept to a portable subset) and a
final SELECT. An engine's only jobs are (1) to expose the contract tables under the names `orders`, `events`,
`members`, `items` (conformed: every contract column present, typed, defaults filled) and (2) to run the steps in
order, each as a named relation the later steps can read. The logic lives in the definitions, once.

- `DuckDBEngine` reads a `Store`'s Parquet files in place (out-of-core: DuckDB streams and spills to disk), or
  in-memory DataFrames (the online path: one member's inline history) through exactly the same SQL.
- `SparkEngine` runs the same plan on a SparkSession: every step is transpiled with sqlglot (duckdb → spark) and
  registered as a temporary view. `transpile_plan()` is what the tests check for every definition.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, Union

import pandas as pd

from features.contract import SCHEMAS, Column, TableSchema
from features.store import Store

TableSource = Union[Store, Mapping[str, pd.DataFrame]]

_SQL_TYPES = {"string": "VARCHAR", "datetime": "TIMESTAMP", "float": "DOUBLE", "int": "BIGINT", "bool": "BOOLEAN"}


@dataclass(frozen=True)
class Step:
    """One named relation of a plan: `name` AS (`sql`). Later steps and the final query refer to it by name.

    `view=True` asks the engine not to materialize it (large pass-through relations such as the as-of order lines);
    otherwise DuckDB stores it as a temporary table, computed once.
    """

    name: str
    sql: str
    view: bool = False


@dataclass(frozen=True)
class Plan:
    """Steps in dependency order and the final SELECT whose result is returned."""

    steps: tuple[Step, ...]
    final: str
    params: dict[str, Any] = field(default_factory=dict)

    def statements(self) -> list[str]:
        return [s.sql for s in self.steps] + [self.final]


class Engine(Protocol):
    """What the pipeline needs from an engine."""

    name: str

    def load(self, source: TableSource, *, member_ids: Sequence[str] | None = None) -> frozenset[str]: ...

    def run(self, plan: Plan) -> pd.DataFrame: ...

    def close(self) -> None: ...


def sql_literal_timestamp(ts: pd.Timestamp) -> str:
    """A portable timestamp literal (sqlglot maps it to each dialect)."""
    return f"CAST('{ts.strftime('%Y-%m-%d %H:%M:%S.%f')}' AS TIMESTAMP)"


def _default_sql(col: Column) -> str:
    if col.default is None:
        return "NULL"
    if isinstance(col.default, bool):
        return "TRUE" if col.default else "FALSE"
    if isinstance(col.default, (int, float)):
        return repr(float(col.default)) if col.dtype == "float" else str(col.default)
    return "'" + str(col.default).replace("'", "''") + "'"


def conform_select(schema: TableSchema, present: Sequence[str], source: str) -> str:
    """SQL selecting exactly the schema's columns from `source`, typed, with defaults for nulls and absent columns."""
    cols = []
    for col in schema.columns:
        typ = _SQL_TYPES[col.dtype]
        if col.name in present:
            expr = f'CAST("{col.name}" AS {typ})'
            if col.default is not None:
                expr = f"COALESCE({expr}, CAST({_default_sql(col)} AS {typ}))"
        else:
            expr = f"CAST({_default_sql(col)} AS {typ})"
        cols.append(f'{expr} AS "{col.name}"')
    return f"SELECT {', '.join(cols)} FROM {source}"


def _check_required(table: str, present: Sequence[str], where: str) -> None:
    missing = [c for c in SCHEMAS[table].required if c not in present]
    if missing:
        raise ValueError(f"{where}: table {table!r} lacks required column(s) {missing}; has {list(present)}")


class DuckDBEngine:
    """Runs plans in an in-process DuckDB connection (memory-bounded; spills to a temporary folder)."""

    name = "duckdb"

    def __init__(self, *, memory_limit: str | None = None, threads: int | None = None,
                 temp_directory: str | os.PathLike[str] | None = None):
        import duckdb

        self.con = duckdb.connect()
        self.con.execute(f"SET memory_limit = '{memory_limit or os.environ.get('MEMBER_ML_DUCKDB_MEMORY', '4GB')}'")
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        self._tmp = temp_directory or tempfile.gettempdir()
        self.con.execute(f"SET temp_directory = '{os.fspath(self._tmp)}'")
        self.con.execute("SET preserve_insertion_order = false")
        self.con.execute("SET enable_progress_bar = false")
        # return freed memory to the OS in the background: otherwise the allocator keeps the peak of the feature
        # queries (~2 GB at 1M members) resident while the loyalty state runs in pandas (measured: RSS after the SQL
        # 700 → 390 MiB at 200k members, no CPU cost)
        self.con.execute("SET allocator_background_threads = true")
        self._frames: dict[str, pd.DataFrame] = {}
        self._in_memory = False
        self._loaded: dict[str, str] = {}  # table name -> VIEW | TABLE
        self._pinned: dict[str, pd.DataFrame] = {}  # table name -> the frame loaded once and kept (see `pin`)

    def __enter__(self) -> "DuckDBEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.con.close()

    def load(self, source: TableSource, *, member_ids: Sequence[str] | None = None) -> frozenset[str]:
        """Expose the contract tables as views `orders`, `events`, `members`, `items`; return the names present.

        With `member_ids`, member tables are restricted to those members up front (cheap inline/online lookups).
        """
        present: list[str] = []
        if member_ids is not None:
            ids = pd.DataFrame({"member_id": pd.Series(list(member_ids), dtype="string")})
            self._frames["wanted_ids"] = ids
            self.con.register("wanted_ids", ids)
        for table, schema in SCHEMAS.items():
            if isinstance(source, Store):
                if not source.has(table):
                    continue
                path = os.fspath(source.table_path(table)).replace("'", "''")
                src = f"read_parquet('{path}')"
                cols = [r[0] for r in self.con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()]
                where = f"store {source.path}"
            else:
                if table not in source or source[table] is None:
                    continue
                df = source[table]
                if not isinstance(df, pd.DataFrame):
                    raise TypeError(f"table {table!r} must be a pandas DataFrame, got {type(df).__name__}")
                if self._pinned.get(table) is df:  # loaded once by `pin`, still there
                    present.append(table)
                    continue
                src = f"src_{table}"
                self._frames[src] = df
                self.con.register(src, df)
                cols = [str(c) for c in df.columns]
                where = "in-memory tables"
            _check_required(table, cols, where)
            sql = conform_select(schema, cols, src)
            if member_ids is not None and "member_id" in schema.names:
                sql = f"SELECT * FROM ({sql}) WHERE member_id IN (SELECT member_id FROM wanted_ids)"
            # In-memory tables are small (inline histories, tests): copy them once into DuckDB's own format, which
            # later steps scan much faster than a pandas frame; Parquet stays a view (read in place, out-of-core).
            kind = "VIEW" if isinstance(source, Store) else "TABLE"
            if table in self._loaded:
                self.con.execute(f"DROP {self._loaded.pop(table)} {table}")
            self._pinned.pop(table, None)
            self.con.execute(f"CREATE TEMP {kind} {table} AS {sql}")
            self._loaded[table] = kind
            if kind == "TABLE":  # copied into DuckDB: the pandas frame is no longer needed
                self.con.unregister(src)
                self._frames.pop(src, None)
            present.append(table)
        for table in set(self._loaded) - set(present):  # a table this source lacks must not keep an older one's rows
            self.con.execute(f"DROP {self._loaded.pop(table)} {table}")
            self._pinned.pop(table, None)
        self._in_memory = not isinstance(source, Store)
        if "orders" not in present:
            unknown = sorted(set(source) - set(SCHEMAS)) if not isinstance(source, Store) else []
            raise ValueError("no orders table: features need at least `orders`"
                             + (f" (unknown table names given: {unknown})" if unknown else ""))
        return frozenset(present)

    def pin(self, tables: Mapping[str, pd.DataFrame]) -> None:
        """Load in-memory tables once and keep them across `load` calls that pass the very same frame object (the
        item catalogue a serving worker sends with every inline history): later loads skip copying them, and
        `release` keeps them. A load that passes another frame (or none) for that table replaces (or drops) it."""
        for table, df in tables.items():
            if table not in SCHEMAS:
                raise ValueError(f"pin: unknown table {table!r}; contract tables are {sorted(SCHEMAS)}")
            if not isinstance(df, pd.DataFrame):
                raise TypeError(f"pin: table {table!r} must be a pandas DataFrame, got {type(df).__name__}")
            cols = [str(c) for c in df.columns]
            _check_required(table, cols, "pinned in-memory table")
            if table in self._loaded:
                self.con.execute(f"DROP {self._loaded.pop(table)} {table}")
            self.con.register(f"pin_{table}", df)
            try:
                self.con.execute(f"CREATE TEMP TABLE {table} AS {conform_select(SCHEMAS[table], cols, f'pin_{table}')}")
            finally:
                self.con.unregister(f"pin_{table}")
            self._loaded[table] = "TABLE"
            self._pinned[table] = df

    def release(self) -> None:
        """Forget the last request's rows: drop every loaded table except pinned ones, and the helper relations.
        A reused engine (`EnginePool`) calls this after each request, so no request can see another's rows."""
        for table in [t for t in self._loaded if t not in self._pinned]:
            self.con.execute(f"DROP {self._loaded.pop(table)} IF EXISTS {table}")
        for name in list(self._frames):
            self.con.unregister(name)
            del self._frames[name]

    def run(self, plan: Plan) -> pd.DataFrame:
        views = {s.name for s in plan.steps if s.view and not self._in_memory}
        for step in plan.steps:
            kind = "VIEW" if step.name in views else "TABLE"
            self.con.execute(f"CREATE OR REPLACE TEMP {kind} {step.name} AS {step.sql}")
        # via Arrow: 2-3x faster than .df() for wide or string-heavy results (same dtypes)
        out = self.con.sql(plan.final).to_arrow_table().to_pandas()
        for step in reversed(plan.steps):
            self.con.execute(f"DROP {'VIEW' if step.name in views else 'TABLE'} IF EXISTS {step.name}")
        return out

    def query(self, sql: str) -> pd.DataFrame:
        return self.con.execute(sql).df()


class EnginePool:
    """DuckDB engines reused across one-member (inline) requests, one per concurrent caller.

    A fresh engine costs a connection, its settings and the item catalogue's copy per request (~40 ms of CPU); a
    pooled one is made once and reused. `engine()` hands a caller an engine no other thread holds (a lock guards
    the idle list; DuckDB connections are not shared between threads), and on return `release()` drops that
    request's tables, so no request sees another's rows; the pinned tables (the item catalogue) stay loaded. Engines
    run one DuckDB thread each: the rows are few and the callers themselves run side by side. At most `max_idle`
    engines are kept (the serving workers run `inline_concurrency` requests at once); extra ones are closed.
    """

    def __init__(self, pinned: Mapping[str, pd.DataFrame] | None = None, *, threads: int = 1, max_idle: int = 4):
        import threading

        self._pinned = {k: v for k, v in (pinned or {}).items() if v is not None}
        self._threads = threads
        self._max_idle = max_idle
        self._idle: list[DuckDBEngine] = []
        self._lock = threading.Lock()
        self.created = 0  # engines made so far (tests, metrics)

    @contextmanager
    def engine(self) -> Iterator[DuckDBEngine]:
        """An engine for this caller alone; its request tables are dropped when the block ends (even on error)."""
        with self._lock:
            eng = self._idle.pop() if self._idle else None
        if eng is None:
            eng = DuckDBEngine(threads=self._threads)
            try:
                if self._pinned:
                    eng.pin(self._pinned)
            except BaseException:
                eng.close()
                raise
            with self._lock:
                self.created += 1
        try:
            yield eng
        finally:
            try:
                eng.release()
            except Exception:  # an engine that cannot be cleaned is not reused
                eng.close()
            else:
                with self._lock:
                    keep = len(self._idle) < self._max_idle
                    if keep:
                        self._idle.append(eng)
                if not keep:
                    eng.close()

    def close(self) -> None:
        """Close the idle engines (engines in use are closed when returned)."""
        with self._lock:
            idle, self._idle, self._max_idle = self._idle, [], 0
        for eng in idle:
            eng.close()


class SparkEngine:
    """Runs the same plans on Spark: each step transpiled by sqlglot and registered as a temporary view.

    Tables come from a Store (Parquet read by Spark) or from DataFrames already registered by the caller. This engine
    needs `pyspark` (extra `spark`); it is exercised only where Spark is installed.
    """

    name = "spark"

    def __init__(self, spark: Any):
        self.spark = spark

    def load(self, source: TableSource, *, member_ids: Sequence[str] | None = None) -> frozenset[str]:
        if member_ids is not None:
            raise NotImplementedError("member_ids filtering on Spark: filter the source tables before loading")
        present = []
        for table, schema in SCHEMAS.items():
            if isinstance(source, Store):
                if not source.has(table):
                    continue
                sdf = self.spark.read.parquet(os.fspath(source.table_path(table)))
            else:
                if table not in source or source[table] is None:
                    continue
                sdf = self.spark.createDataFrame(source[table])
            sdf.createOrReplaceTempView(f"src_{table}")
            _check_required(table, sdf.columns, "spark source")
            sql = to_dialect(conform_select(schema, sdf.columns, f"src_{table}"), "spark")
            self.spark.sql(sql).createOrReplaceTempView(table)
            present.append(table)
        return frozenset(present)

    @contextmanager
    def _final(self, plan: Plan) -> Iterator[Any]:
        """The plan's final query as a Spark DataFrame, valid inside the block (its steps' views and caches live as
        long as the block). As in DuckDB, steps not marked `view` are computed once (cached) since several later
        steps read them; without this Spark recomputes e.g. the per-order relation for every consumer."""
        cached = []
        for step in plan.steps:
            sdf = self.spark.sql(to_dialect(step.sql, "spark"))
            if not step.view:
                sdf = sdf.cache()
                cached.append(sdf)
            sdf.createOrReplaceTempView(step.name)
        try:
            yield self.spark.sql(to_dialect(plan.final, "spark"))
        finally:
            for sdf in cached:
                sdf.unpersist()
            for step in plan.steps:
                self.spark.catalog.dropTempView(step.name)

    def run(self, plan: Plan) -> pd.DataFrame:
        with self._final(plan) as sdf:
            return sdf.toPandas()

    def dataframe(self, plan: Plan) -> Any:
        """The plan's result as a Spark DataFrame, not collected (batch scoring on Spark keeps working on it).

        The result is materialized once (`localCheckpoint`, on the executors), so the steps' caches and views can be
        released at once and later stages do not recompute the plan.
        """
        with self._final(plan) as sdf:
            return sdf.localCheckpoint(eager=True)

    def close(self) -> None:
        pass


def to_dialect(sql: str, dialect: str) -> str:
    """Transpile one DuckDB-dialect statement to `dialect` (raises sqlglot's ParseError if it cannot)."""
    import sqlglot

    trees = sqlglot.parse(sql, read="duckdb")
    if len(trees) != 1 or trees[0] is None:
        raise ValueError(f"expected one statement, got {len(trees)}")
    tree = trees[0]
    if dialect in ("spark", "databricks"):
        tree = tree.transform(_spark_double_literals)
    return tree.sql(dialect=dialect, unsupported_level=sqlglot.ErrorLevel.RAISE)


def _spark_double_literals(node: Any) -> Any:
    """The one dialect tweak: Spark reads `86400.0` as DECIMAL(6,1), and DECIMAL division rounds to a few digits;
    DuckDB's result is a DOUBLE. Fractional literals become DOUBLE on Spark so both engines compute in float64."""
    from sqlglot import exp

    if isinstance(node, exp.Literal) and not node.is_string and any(ch in node.this for ch in ".eE"):
        return exp.cast(node.copy(), exp.DataType.build("DOUBLE"))
    return node


def transpile_plan(plan: Plan, dialect: str = "spark") -> list[str]:
    """Every statement of a plan in another SQL dialect: the check that the definitions stay portable."""
    return [to_dialect(s, dialect) for s in plan.statements()]


def make_engine(engine: str | Engine = "duckdb", **kwargs: Any) -> Engine:
    """An engine by name (`duckdb`) or an engine instance passed through."""
    if not isinstance(engine, str):
        return engine
    match engine:
        case "duckdb":
            return DuckDBEngine(**kwargs)
        case "spark":
            raise ValueError("the spark engine needs a SparkSession: pass SparkEngine(spark) as `engine`")
        case _:
            raise ValueError(f"unknown engine {engine!r}; choose 'duckdb' or pass an Engine instance")


def as_timestamp(value: object, name: str = "as_of") -> pd.Timestamp:
    """Parse a cutoff (date string, date, datetime, Timestamp) into a tz-naive Timestamp (UTC wall time)."""
    try:
        ts = pd.Timestamp(value)  # type: ignore[arg-type]
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}: cannot parse {value!r} as a date/time ({exc})") from None
    if ts is pd.NaT:
        raise ValueError(f"{name}: missing date/time")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts


def open_engine(source: TableSource, engine: str | Engine = "duckdb", *,
                member_ids: Sequence[str] | None = None) -> tuple[Engine, frozenset[str], bool]:
    """Make (or take) an engine and load `source` into it; returns (engine, tables present, owned)."""
    if isinstance(source, (str, os.PathLike)):
        source = Store(source)
    if isinstance(source, Store):
        source.check()
    owned = isinstance(engine, str)
    eng = make_engine(engine)
    try:
        tables = eng.load(source, member_ids=member_ids)
    except BaseException:
        if owned:
            eng.close()
        raise
    return eng, tables, owned
