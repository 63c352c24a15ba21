"""`--messy` round trip: ingestion quarantines exactly the injected rows (per table and rule) and keeps the clean ones;
plus the `member-ml generate` command end to end."""
from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from features.store import Store
from features.synthetic import generate, write_store
from features.synthetic.messy import TABLE_RULES

ingest_mod = pytest.importorskip("features.ingest", reason="ingestion (features/ingest.py) is not available yet")
validation = pytest.importorskip("features.validation", reason="validation (features/validation.py) is not available yet")


@pytest.fixture(scope="module")
def messy_store(tmp_path_factory):
    data = generate(1500, 21, messy=True)
    raw = tmp_path_factory.mktemp("raw")
    write_store(data, raw)
    out = tmp_path_factory.mktemp("store")
    report = ingest_mod.ingest("parquet", raw, out)
    return data, raw, Store(out), report


def test_injection_rules_are_ingestion_rules():
    for rules in TABLE_RULES.values():
        assert set(rules) <= set(validation.RULES)


def test_quarantine_counts_equal_injections(messy_store):
    data, raw, _, report = messy_store
    for table, rules in data.injections.items():
        got = report["tables"][table]["rules"]
        assert got == rules, (table, got, rules)
        assert report["tables"][table]["rows_in"] == data.tables[table].num_rows + sum(rules.values())
    flat = json.loads((raw / "messy_injections.json").read_text(encoding="utf-8"))
    assert flat == data.injection_counts()
    assert set(flat) == {r for rules in TABLE_RULES.values() for r in rules}, "every rule is exercised"


def test_kept_rows_equal_the_clean_tables(messy_store):
    data, _, store, _ = messy_store
    for table in data.tables:
        pd.testing.assert_frame_equal(store.read(table), data.frame(table), check_dtype=True)


def test_raw_tables_carry_strings_and_quarantine_names_the_rule(messy_store):
    _, raw, store, _ = messy_store
    schema = pq.read_schema(raw / "orders.parquet")
    assert str(schema.field("ordered_at").type) == "string" and str(schema.field("amount").type) == "string"
    q = store.read_quarantine("orders")
    assert q is not None and q["reason"].notna().all()
    assert set(q["rule"]) == set(TABLE_RULES["orders"])


def test_generate_command_end_to_end(tmp_path):
    from member_ml.cli import app

    runner = CliRunner()
    out = tmp_path / "raw"
    res = runner.invoke(app, ["generate", "--members", "400", "--seed", "3", "--out", str(out), "--messy",
                              "--workers", "1"])
    assert res.exit_code == 0, res.output
    for f in ("orders.parquet", "members.parquet", "events.parquet", "items.parquet", "ground_truth.parquet",
              "ground_truth_cycles.parquet", "messy_injections.json", "synthetic.json"):
        assert (out / f).exists(), f
    meta = json.loads((out / "synthetic.json").read_text(encoding="utf-8"))
    assert meta["n_members"] == 400 and meta["seed"] == 3 and meta["messy"] is True
    res = runner.invoke(app, ["ingest", "--source", "parquet", "--path", str(out), "--out", str(tmp_path / "store")])
    assert res.exit_code == 0, res.output

    # clean store, streamed; same data as in-memory generation
    clean = tmp_path / "clean"
    res = runner.invoke(app, ["generate", "--members", "400", "--seed", "3", "--out", str(clean), "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert not (clean / "messy_injections.json").exists()
    expected = generate(400, 3)
    pd.testing.assert_frame_equal(Store(clean).read("orders"), expected.orders)


@pytest.mark.parametrize("args, message", [
    (["--members", "0"], "--members"),
    (["--members", "10", "--start", "2024-13-01"], "--start"),
    (["--members", "10", "--start", "2025-01-01", "--end", "2024-01-01"], "before"),
])
def test_generate_command_rejects_bad_options(tmp_path, args, message):
    from member_ml.cli import app

    res = CliRunner().invoke(app, ["generate", "--out", str(tmp_path / "x"), *args])
    assert res.exit_code == 2
    assert message in res.output


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 10_000), st.integers(60, 250))
def test_every_injected_row_trips_exactly_its_rule(seed, n):
    """Property: for any seed and size, validation charges exactly the injected rows to their rules, table by table,
    and keeps exactly the clean rows."""
    data = generate(n, seed, messy=True)
    for table, raw in data.raw.items():
        res = validation.validate(raw.to_pandas(), table, as_of="2026-06-01")
        assert res.counts == data.injections[table], (table, res.counts, data.injections[table])
        pd.testing.assert_frame_equal(res.kept, data.frame(table), check_dtype=True)


def test_streamed_store_equals_in_memory_generation(tmp_path):
    from features.synthetic import generate_to_store

    meta = generate_to_store(700, 4, tmp_path / "s", chunk_members=250, workers=2)
    expected = generate(700, 4, chunk_members=250, workers=1)
    store = Store(tmp_path / "s")
    for t in expected.tables:
        pd.testing.assert_frame_equal(store.read(t), expected.frame(t), check_dtype=True)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "s" / "ground_truth.parquet"), expected.ground_truth)
    assert meta["rows"] == expected.meta["rows"]
