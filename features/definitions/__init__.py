"""The feature definitions (DESIGN §4): one source of truth, written as SQL in DuckDB's dialect, portable subset.

Each family module contributes named steps (relations keyed by member_id, or helpers) and `FeatureSpec`s: the final
column name, the SQL expression that computes it from the steps, its kind (numeric / categorical) and a description.
`feature_plan()` assembles the families that the present tables allow into one `Plan` whose final SELECT joins every
family onto the population. Every step reads the as-of views (`ol`, `ev`, `mem`; defined in `base`) that keep rows
strictly before the cutoff T, so nothing at or after T can reach a feature.

Portability rules kept here (checked by tests via sqlglot duckdb → spark): no QUALIFY, no FILTER clauses, no
DuckDB-only functions (list/struct, ISODOW, mode); windows as explicit CASE WHEN aggregates; deterministic tie-breaks
(every ROW_NUMBER orders by a unique key; LAG/LEAD only where tied rows give equal results) so a parallel engine
gives the same answer as a single member's history.

Speed (DESIGN §4 benchmark: 1M members, ~20M order lines): each big table is read as few times as possible (the
order lines three times: paid orders, non-paid rows, paid lines by category; the events twice), every per-member
figure of one relation comes from one GROUP BY, and counts are COUNT(CASE WHEN … THEN 1 END) (BIGINT) rather than
SUM(CASE … 1 ELSE 0 END) (which DuckDB accumulates as a 128-bit integer).
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from features.engine import Plan, Step

WINDOWS: tuple[int, ...] = (30, 90, 180, 365)


@dataclass(frozen=True)
class FeatureSpec:
    """One output feature: name, SQL expression over the family steps, kind, family and meaning."""

    name: str
    expr: str
    kind: str  # "numeric" | "categorical"
    family: str
    description: str

    def select(self) -> str:
        if self.kind == "categorical":
            return f'CAST({self.expr} AS VARCHAR) AS "{self.name}"'
        return f'CAST({self.expr} AS DOUBLE) AS "{self.name}"'


@dataclass(frozen=True)
class Family:
    name: str
    requires: frozenset[str]  # tables needed besides orders
    steps: tuple[Step, ...]
    joins: tuple[str, ...]  # "step" or "step alias": LEFT JOINed onto the population by member_id
    features: tuple[FeatureSpec, ...]
    population: tuple[str, ...] = ()  # relations whose members (keyed by member_id) join the population


def _families(t: str, tables: frozenset[str]) -> list[Family]:
    from features.definitions import engagement, members, orders

    fams = orders.families(t, tables) + engagement.families(t, tables) + members.families(t, tables)
    return [f for f in fams if f.requires <= tables]


def feature_specs(tables: Iterable[str]) -> list[FeatureSpec]:
    """The SQL features produced when `tables` are present (orders is always required)."""
    tables = frozenset(tables) | {"orders"}
    return [s for f in _families("CAST('2000-01-01 00:00:00' AS TIMESTAMP)", tables) for s in f.features]


def feature_plan(t: str, tables: frozenset[str]) -> Plan:
    """The plan computing every SQL feature as of cutoff literal `t` from the loaded `tables`."""
    from features.definitions import base

    fams = _families(t, tables)
    steps = list(base.steps(t, tables))
    seen = {s.name for s in steps}
    for fam in fams:
        for s in fam.steps:
            if s.name not in seen:
                steps.append(s)
                seen.add(s.name)
    pop = [r for fam in fams for r in fam.population]
    steps.append(Step("population", " UNION ".join(f"SELECT member_id FROM {r}" for r in pop)))
    cols = ["p.member_id AS member_id"] + [spec.select() for fam in fams for spec in fam.features]
    joins = []
    joined: set[str] = set()
    for fam in fams:
        for j in fam.joins:  # "step" or "step alias"
            name, _, alias = j.partition(" ")
            if name not in joined:
                joins.append(f"LEFT JOIN {name} {alias or name} ON {alias or name}.member_id = p.member_id")
                joined.add(name)
    final = (f"SELECT {', '.join(cols)}\nFROM population p\n" + "\n".join(joins) + "\nORDER BY p.member_id")
    return Plan(tuple(steps), final)


def definitions_digest(tables: Iterable[str]) -> str:
    """A short hash of the feature SQL (cutoff-independent): recorded in manifests next to FEATURE_VERSION."""
    plan = feature_plan("CAST('2000-01-01 00:00:00' AS TIMESTAMP)", frozenset(tables) | {"orders"})
    return hashlib.sha256("\n;\n".join(plan.statements()).encode()).hexdigest()[:12]
