"""Ingestion of the real datasets: Online Retail (one and two years), Taobao UserBehavior, Complete Journey."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from features.ingest import ingest
from features.store import Store
from features.validation import RULES
from member_ml.cli import app

pytestmark = pytest.mark.realdata


def _check_balance(report: dict) -> None:
    for t, r in report["tables"].items():
        assert r["rows_in"] == r["rows_kept"] + r["rows_quarantined"], t
        assert sum(r["rules"].values()) == r["rows_quarantined"], t
        assert set(r["rules"]) <= set(RULES), t


def test_online_retail_2010_2011_cli(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "or"
    res = CliRunner().invoke(app, ["ingest", "--source", "online-retail", "--path",
                                   str(shared_data / "uci-online-retail-2010-2011"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "541,909" in res.output and "missing_member_id" in res.output
    rep = json.loads((out / "validation_report.json").read_text(encoding="utf-8"))
    o = rep["tables"]["orders"]
    assert o["rows_in"] == 541_909
    assert o["rows_kept"] + o["rows_quarantined"] == 541_909
    assert o["rules"]["missing_member_id"] == 135_080  # the published count of lines without a CustomerID
    assert o["rules"]["duplicate_line"] > 5_000 and o["rules"]["non_product_line"] > 1_000
    _check_balance(rep)
    kept = Store(out).read("orders")
    assert len(kept) == o["rows_kept"] and (kept["amount"] >= 0).all()
    refunds = kept[kept["status"] == "refunded"]
    assert len(refunds) > 3_000 and refunds["order_id"].str.startswith("C").all()
    assert kept.loc[kept["status"] == "paid", "order_id"].str.match(r"^\d").all()
    q = pd.read_parquet(out / "quarantine" / "orders.parquet")
    guest = q[q["rule"] == "missing_member_id"]
    assert len(guest) == 135_080 and guest["reason"].str.contains("member_id").all()
    assert guest["source_row"].str.startswith("online_retail.parquet:").all()
    assert kept["member_id"].str.fullmatch(r"\d+").all()  # 17850.0 -> "17850"


@pytest.mark.slow
def test_online_retail_two_years_join(shared_data: Path, tmp_path: Path) -> None:
    rep = ingest("online-retail", [shared_data / "uci-online-retail-ii-2009-2010",
                                   shared_data / "uci-online-retail-2010-2011"], tmp_path / "or2")
    assert rep["notes"]["overlap_rows_dropped"] == {"online_retail_ii_2009_2010.parquet": 22_523}
    assert rep["tables"]["orders"]["rows_in"] == 541_909 + 525_461 - 22_523
    _check_balance(rep)
    kept = Store(tmp_path / "or2").read("orders")
    assert kept["ordered_at"].min() < pd.Timestamp("2009-12-02")
    assert kept["ordered_at"].max() > pd.Timestamp("2011-12-08")
    both = kept.groupby("member_id")["ordered_at"].agg(["min", "max"])
    assert ((both["min"] < "2010-12-01") & (both["max"] >= "2010-12-01")).sum() > 2_000


def test_taobao_userbehavior(shared_data: Path, tmp_path: Path) -> None:
    rep = ingest("taobao-userbehavior", shared_data / "taobao-userbehavior-head" / "UserBehavior_head.csv",
                 tmp_path / "tb")
    _check_balance(rep)
    assert rep["tables"]["orders"]["rows_in"] == 1_750
    assert rep["tables"]["events"]["rows_in"] == 75_872 + 4_497 + 2_356 + 1  # + the truncated last line
    assert rep["tables"]["events"]["rules"] == {"truncated_line": 1}
    caps = rep["capabilities"]
    assert caps["monetary"] is False and {"monetary", "ltv", "spend_tiers", "points"} <= set(caps["unsupported"])
    assert "never invented" in caps["why_not_monetary"]
    store = Store(tmp_path / "tb")
    assert store.read("orders")["amount"].isna().all()
    ev = store.read("events")
    assert ev["type"].value_counts().to_dict() == {"view": 75_872, "cart": 4_497, "favorite": 2_356}
    assert ev["occurred_at"].max() < pd.Timestamp("2017-12-04")
    q = store.read_quarantine("events")
    assert q["source_row"].tolist() == ["UserBehavior_head.csv:84476"]


@pytest.mark.slow
def test_completejourney(tmp_path: Path) -> None:
    """Takes ~10-30 s: 1.47M transaction lines."""
    rep = ingest("completejourney", None, tmp_path / "cj")
    _check_balance(rep)
    t = rep["tables"]
    assert t["orders"]["rows_in"] == 1_469_307
    assert t["orders"]["rules"] == {"bad_quantity": t["orders"]["rows_quarantined"]}  # the quantity-0 lines
    assert t["orders"]["outliers"]["quantity_gt_1000"] > 10_000  # real (fuel etc.): kept, counted
    assert t["members"]["rows_kept"] == 2_469 and t["items"]["rows_kept"] == 92_331
    store = Store(tmp_path / "cj")
    m = store.read("members")
    assert m["age"].notna().sum() == 801 and set(m["age"].dropna()) <= {21.5, 29.5, 39.5, 49.5, 59.5, 70.0}
    ev = store.read("events")
    assert set(ev["type"]) == {"campaign_received", "coupon_redeemed"}
    o = store.read("orders", columns=["quantity", "coupon_used", "discount", "category"])
    assert o["quantity"].max() > 10_000 and o["coupon_used"].any() and (o["discount"] >= 0).all()
    assert o["category"].notna().mean() > 0.99
    assert rep["capabilities"]["demographics"] is True and rep["capabilities"]["unsupported"] == []
