"""The online feature table: atomic materialization, lookups, recent items, and the CLI commands."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from features.online import OnlineFeatureTable, materialize
from features.pipeline import compute_features, compute_recent_items
from member_ml.cli import app
from tests.fixtures_features import make_tables, write_store

AS_OF = "2022-10-01"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("online") / "store", make_tables(50, 3))


def test_lookups_match_compute_features(store, tmp_path) -> None:
    path = materialize(store, AS_OF, tmp_path / "o" / "online.duckdb")
    assert [p.name for p in path.parent.iterdir()] == ["online.duckdb"]  # no temporary leftovers
    tbl = OnlineFeatureTable(path)
    feats = compute_features(store, AS_OF)
    assert len(tbl) == len(feats) and tbl.feature_names == list(feats.columns[1:])
    m = feats.member_id.iloc[3]
    got = tbl.get(m)
    assert got["member_id"] == m and got["orders_lifetime"] == feats.orders_lifetime.iloc[3]
    assert all(v is None or isinstance(v, (str, float)) for v in got.values())
    assert tbl.get("nobody") is None and "nobody" not in tbl and m in tbl
    many = tbl.get_many([feats.member_id.iloc[5], "nobody", feats.member_id.iloc[1]])
    assert list(many.member_id) == [feats.member_id.iloc[5], feats.member_id.iloc[1]]
    items = compute_recent_items(store, AS_OF)
    mine = tbl.recent_items(m)
    pd.testing.assert_frame_equal(mine, items[items.member_id == m].reset_index(drop=True))
    assert tbl.recent_items("nobody").empty and list(tbl.recent_items("nobody").columns) == list(items.columns)
    assert tbl.meta["fingerprint"] == store.fingerprint() and tbl.as_of == pd.Timestamp(AS_OF)


def test_missing_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="online build"):
        OnlineFeatureTable(tmp_path / "absent.duckdb")


def test_cli_features_and_online_build(store, tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "f.parquet"
    r = runner.invoke(app, ["features", "--store", str(store.path), "--as-of", AS_OF, "--out", str(out)])
    assert r.exit_code == 0, r.output
    df = pd.read_parquet(out)
    manifest = json.loads((tmp_path / "f.manifest.json").read_text())
    assert manifest["rows"] == len(df) and manifest["features"] == list(df.columns[1:])
    pd.testing.assert_frame_equal(df, compute_features(store, AS_OF), check_exact=False, rtol=1e-12)
    r = runner.invoke(app, ["online", "build", "--store", str(store.path), "--as-of", AS_OF,
                            "--out", str(tmp_path / "on.duckdb")])
    assert r.exit_code == 0, r.output
    assert len(OnlineFeatureTable(tmp_path / "on.duckdb")) == len(df)
    r = runner.invoke(app, ["training-set", "--store", str(store.path), "--start", "2022-04-01", "--end",
                            "2022-06-01", "--ltv-horizon", "60", "--out", str(tmp_path / "ts.parquet")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "ts.manifest.json").exists()


def test_cli_errors_are_clear(tmp_path) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["features", "--store", str(tmp_path / "nope"), "--as-of", AS_OF, "--out",
                            str(tmp_path / "f.parquet")])
    assert r.exit_code == 2 and "does not exist" in " ".join(r.output.split())


def test_recent_items_match_the_recommenders_history_summary(store) -> None:
    """Serving feeds the ranker `recent_items` rows; training summarises raw orders and item events: every column
    agrees (items only seen included; tests/test_recs_history_parity.py checks the 365-day window)."""
    from training.member_pyfunc.recs import summarise_history

    items = compute_recent_items(store, AS_OF, days=100_000).set_index(["member_id", "item_id"]).sort_index()
    orders = pd.read_parquet(store.path / "orders.parquet")
    events = pd.read_parquet(store.path / "events.parquet")
    assert (orders["status"] != "paid").any()  # refunded/cancelled lines are netted out on both sides
    summary = summarise_history(orders, events, AS_OF).set_index(["member_id", "item_id"]).sort_index()
    assert len(items) > 50 and items.index.equals(summary.index)
    assert (summary["n_bought"] == 0).any() and (summary["n_view"] > 0).any()  # seen-only items and views exist
    for c in ("n_bought", "n_bought_hl14", "n_bought_hl56", "n_view", "n_cart", "n_favorite", "n_view_hl1",
              "n_cart_hl1"):
        assert items[c].astype(float).to_numpy() == pytest.approx(summary[c].to_numpy(dtype=float), rel=1e-9), c
    for c in ("last_bought_at", "first_bought_at", "last_seen_at"):
        assert items[c].astype("datetime64[us]").equals(summary[c].astype("datetime64[us]")), c


def test_recent_items_columns_are_the_recommenders_history_columns(store) -> None:
    """The online `recent_items` rows are the recommender's history input: the recent-items plan
    (features/definitions/recent_items.py) is the one source of their columns, and every column the ranker requires
    is served; nothing served is ignored by it except the display category."""
    from training.member_pyfunc.recs import HISTORY_OPTIONAL, HISTORY_REQUIRED

    cols = set(compute_recent_items(store, AS_OF).columns)
    assert set(HISTORY_REQUIRED) <= cols
    assert set(HISTORY_OPTIONAL) <= cols  # every optional column, event counts included
    assert cols - set(HISTORY_REQUIRED) - set(HISTORY_OPTIONAL) == {"category"}
