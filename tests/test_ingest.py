"""Validation rules, decoding, personal-data dropping, adapters on fixtures, and the ingest/summary CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from features.adapters import drop_personal, is_personal
from features.adapters.tabular import detect_encoding, load_mapping, read_csv_text
from features.contract import EVENT_TYPES, GENDERS, SCHEMAS, STATUSES
from features.ingest import IngestError, ingest
from features.store import Store
from features.validation import EVENT_SPELLINGS, GENDER_SPELLINGS, RULES, STATUS_SPELLINGS, validate
from member_ml.cli import app

FIXTURES = Path(__file__).parent / "fixtures"
AS_OF = "2024-01-01"


def flat(text: str) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(text.split())


def order(**kw: object) -> dict[str, object]:
    row = {"order_id": "o1", "member_id": "m1", "ordered_at": "2023-05-01 10:00:00", "amount": "10.5",
           "item_id": "i1", "quantity": "1", "status": "paid"}
    row.update(kw)
    return row


def orders_frame(*rows: dict[str, object]) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def check_one(raw: pd.DataFrame, table: str, rule: str, **kw: object) -> pd.DataFrame:
    """The last row of `raw` must be quarantined by `rule`, all other rows kept."""
    r = validate(raw, table, as_of=AS_OF, **kw)
    assert r.counts == {rule: 1}, r.quarantine[["rule", "reason"]].to_dict("records")
    assert r.rows_kept == len(raw) - 1
    q = r.quarantine
    assert q["source_row"].tolist() == [str(len(raw) - 1)]
    assert q["reason"].iloc[0]
    return q


# ------------------------------------------------------------------ one tiny frame per rule

@pytest.mark.parametrize("value", [None, "", "   ", "nan"])
def test_missing_order_id(value: object) -> None:
    check_one(orders_frame(order(), order(order_id=value)), "orders", "missing_order_id")


def test_missing_member_id() -> None:
    q = check_one(orders_frame(order(), order(member_id=np.nan)), "orders", "missing_member_id")
    assert "member_id" in q["reason"].iloc[0]


def test_missing_item_id_orders_and_items() -> None:
    check_one(orders_frame(order(), order(order_id="o2", item_id="")), "orders", "missing_item_id")
    check_one(pd.DataFrame({"item_id": ["a", None], "price": [1.0, 2.0]}), "items", "missing_item_id")


def test_orders_without_item_column_need_no_item() -> None:
    raw = orders_frame(order()).drop(columns=["item_id"])
    assert validate(raw, "orders", as_of=AS_OF).rows_kept == 1


def test_unparseable_timestamp() -> None:
    q = check_one(orders_frame(order(), order(ordered_at="31/31/2023 25:61")), "orders", "unparseable_timestamp")
    assert "31/31/2023" in q["reason"].iloc[0]


def test_timestamp_formats_parse() -> None:
    raw = orders_frame(order(ordered_at="2023-05-01"), order(order_id="b", ordered_at="2023/05/02 08:00"),
                       order(order_id="c", ordered_at="2023-05-03T09:30:00+08:00"))
    r = validate(raw, "orders", as_of=AS_OF)
    assert r.rows_kept == 3
    assert str(r.kept["ordered_at"].dtype) == "datetime64[us]"
    assert r.kept["ordered_at"].iloc[2] == pd.Timestamp("2023-05-03 01:30:00")  # UTC, naive


def test_future_timestamp_is_strictly_after_as_of() -> None:
    raw = orders_frame(order(ordered_at=AS_OF), order(order_id="o2", ordered_at="2024-01-01 00:00:01"))
    q = check_one(raw, "orders", "future_timestamp")
    assert "after the as-of" in q["reason"].iloc[0]


def test_future_timestamp_default_as_of_is_now() -> None:
    raw = orders_frame(order(), order(order_id="o2", ordered_at="2999-01-01"))
    assert validate(raw, "orders").counts == {"future_timestamp": 1}


@pytest.mark.parametrize("value", ["abc", "", None, "1.2.3"])
def test_non_numeric_amount(value: object) -> None:
    check_one(orders_frame(order(), order(order_id="o2", amount=value)), "orders", "non_numeric_amount")


def test_amount_spellings_parse() -> None:
    raw = orders_frame(order(amount="¥1,299.00"), order(order_id="o2", amount=" 3 "))
    r = validate(raw, "orders", as_of=AS_OF)
    assert r.kept["amount"].tolist() == [1299.0, 3.0]


def test_negative_amount() -> None:
    check_one(orders_frame(order(), order(order_id="o2", amount="-1")), "orders", "negative_amount")
    check_one(pd.DataFrame({"item_id": ["a", "b"], "price": [1.0, -2.0]}), "items", "negative_amount")


@pytest.mark.parametrize("qty", ["0", "-2", "two"])
def test_bad_quantity_on_paid_line(qty: str) -> None:
    check_one(orders_frame(order(), order(order_id="o2", quantity=qty)), "orders", "bad_quantity")


def test_refund_may_carry_negative_quantity_stored_as_absolute() -> None:
    raw = orders_frame(order(), order(status="Refunded", quantity="-2", amount="21"))
    r = validate(raw, "orders", as_of=AS_OF)
    assert r.rows_quarantined == 0
    assert r.kept["quantity"].tolist() == [1.0, 2.0]
    assert r.kept["status"].tolist() == ["paid", "refunded"]


def test_status_spellings_case_insensitive() -> None:
    words = ["PAID", "Completed", "交易成功", "refund", "退款成功", "Canceled", "交易关闭", None]
    raw = orders_frame(*[order(order_id=f"o{i}", status=w) for i, w in enumerate(words)])
    r = validate(raw, "orders", as_of=AS_OF)
    assert r.kept["status"].tolist() == ["paid", "paid", "paid", "refunded", "refunded", "cancelled", "cancelled", "paid"]


def test_spelling_tables_map_onto_contract_values() -> None:
    assert set(STATUS_SPELLINGS.values()) == set(STATUSES)
    assert set(EVENT_SPELLINGS.values()) <= set(EVENT_TYPES)
    assert set(GENDER_SPELLINGS.values()) <= set(GENDERS)


def test_unknown_status() -> None:
    q = check_one(orders_frame(order(), order(order_id="o2", status="pending")), "orders", "unknown_status")
    assert "pending" in q["reason"].iloc[0]


def test_duplicate_line_keeps_first() -> None:
    raw = orders_frame(order(), order(item_id="i2"), order())
    q = check_one(raw, "orders", "duplicate_line")
    assert q["source_row"].tolist() == ["2"]


def test_same_line_differing_in_one_contract_column_is_not_duplicate() -> None:
    raw = orders_frame(order(), order(quantity="2"), order(status="refunded"))
    assert validate(raw, "orders", as_of=AS_OF).rows_quarantined == 0


def test_unknown_event_type_and_spellings() -> None:
    raw = pd.DataFrame({"member_id": ["m"] * 4, "occurred_at": ["2023-01-01"] * 4,
                        "type": ["pv", "Favourite", "checkin", "teleport"]})
    q = check_one(raw, "events", "unknown_event_type")
    assert "teleport" in q["reason"].iloc[0]
    r = validate(raw, "events", as_of=AS_OF)
    assert r.kept["type"].tolist() == ["view", "favorite", "checkin"]
    assert set(r.kept["type"]) <= set(EVENT_TYPES)


def test_duplicate_key_members_and_items() -> None:
    check_one(pd.DataFrame({"member_id": ["a", "b", "a"], "age": [30, 40, 50]}), "members", "duplicate_key")
    check_one(pd.DataFrame({"item_id": ["x", "x"]}), "items", "duplicate_key")


def test_invalid_value_members() -> None:
    raw = pd.DataFrame({"member_id": ["a", "b", "c"], "gender": ["女", "male", "M"],
                        "marketing_consent": ["yes", "0", "maybe"]})
    q = check_one(raw, "members", "invalid_value")
    assert "marketing_consent" in q["reason"].iloc[0]
    r = validate(raw, "members", as_of=AS_OF)
    assert r.kept["gender"].tolist() == ["F", "M"]
    assert r.kept["marketing_consent"].tolist() == [True, False]


def test_adapter_masks_non_product_and_truncated() -> None:
    raw = orders_frame(order(), order(order_id="o2", item_id="POST"))
    check_one(raw, "orders", "non_product_line", non_product=np.array([False, True]))
    check_one(raw, "orders", "truncated_line", truncated=np.array([False, True]))


def test_first_failing_rule_wins_in_documented_order() -> None:
    raw = orders_frame(order(), order(order_id="", member_id="", ordered_at="bad", amount="-1"))
    r = validate(raw, "orders", as_of=AS_OF)
    assert r.counts == {"missing_order_id": 1}
    assert list(RULES)[:4] == ["truncated_line", "missing_order_id", "missing_member_id", "missing_item_id"]
    r = validate(raw, "orders", as_of=AS_OF, truncated=np.array([False, True]))
    assert r.counts == {"truncated_line": 1}  # checked first: its missing fields are not blamed on other rules


def test_quarantine_keeps_raw_values_as_strings_and_context() -> None:
    raw = orders_frame(order(), order(order_id="o2", amount="abc")).assign(country=["UK", "FR"])
    r = validate(raw, "orders", as_of=AS_OF)
    q = r.quarantine
    assert q.loc[0, "amount"] == "abc" and q.loc[0, "country"] == "FR"
    assert {"rule", "reason", "source_row"} <= set(q.columns)
    assert list(r.kept.columns) == SCHEMAS["orders"].names  # context columns are never stored


# ------------------------------------------------------------------ property: every row lands exactly once

_cell = st.one_of(st.none(), st.sampled_from(["", " ", "x", "abc", "-1", "0", "3", "2.5", "2023-02-01",
                                              "2999-01-01", "paid", "REFUNDED", "weird", "1e400"]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.fixed_dictionaries({c: _cell for c in
                                       ["order_id", "member_id", "ordered_at", "amount", "quantity", "status"]}),
                min_size=0, max_size=25))
def test_rows_in_equals_kept_plus_quarantined(rows: list[dict[str, object]]) -> None:
    raw = pd.DataFrame(rows, columns=["order_id", "member_id", "ordered_at", "amount", "quantity", "status"])
    r = validate(raw, "orders", as_of=AS_OF)
    assert r.rows_in == len(raw) == r.rows_kept + r.rows_quarantined
    assert sum(r.counts.values()) == r.rows_quarantined
    assert set(r.counts) <= set(RULES)
    if r.rows_kept:
        k = r.kept
        assert k["order_id"].notna().all() and k["member_id"].notna().all()
        assert (k["amount"] >= 0).all() and (k["ordered_at"] <= pd.Timestamp(AS_OF)).all()
        assert k["status"].isin(["paid", "refunded", "cancelled"]).all()
        assert not k.duplicated().any()


# ------------------------------------------------------------------ decoding and personal data

def test_detect_encoding() -> None:
    assert detect_encoding("a,b\n".encode("utf-8")) == "utf-8"
    assert detect_encoding(b"\xef\xbb\xbf" + "订单".encode("utf-8")) == "utf-8-sig"
    assert detect_encoding("订单编号,买家会员名\n".encode("gbk")) == "gb18030"


@pytest.mark.parametrize("name", ["taobao_orders_gbk.csv", "taobao_orders_utf8bom.csv"])
def test_csv_decodes_gbk_and_bom(name: str) -> None:
    df, enc = read_csv_text(FIXTURES / name)
    assert df.columns[0] == "订单编号"  # no BOM glued to the first header
    assert "交易成功" in set(df["订单状态"])
    assert enc in ("gb18030", "utf-8-sig")


def test_personal_columns_detected() -> None:
    for c in ["收货人姓名", "联系手机", "收货地址", "联系电话", "email", "Phone Number", "customer_name", "address_line1",
              "买家支付宝账号"]:
        assert is_personal(c), c
    for c in ["买家会员名", "订单编号", "member_id", "amount", "item_id", "category", "宝贝标题", "status"]:
        assert not is_personal(c), c
    df, dropped = drop_personal(pd.DataFrame(columns=["member_id", "email", "收货地址"]))
    assert list(df.columns) == ["member_id"] and dropped == ["email", "收货地址"]


# ------------------------------------------------------------------ adapters on fixture files

def _all_text(store: Path) -> str:
    """Everything a store holds, as text (tables, quarantine, report)."""
    parts = [store.joinpath(Store.REPORT).read_text(encoding="utf-8")]
    for f in sorted(store.rglob("*.parquet")):
        parts.append(pd.read_parquet(f).astype(str).to_csv())
    return "\n".join(parts)


@pytest.mark.parametrize("name", ["taobao_orders_gbk.csv", "taobao_orders_utf8bom.csv"])
def test_taobao_orders_export(tmp_path: Path, name: str) -> None:
    rep = ingest("taobao-orders", FIXTURES / name, tmp_path / "s", as_of=AS_OF, max_bad_share=0.5)
    t = rep["tables"]["orders"]
    # 9 export rows + 2 paid rows added before the two refunds that had been paid
    assert t["rows_in"] == 11 and t["rows_kept"] + t["rows_quarantined"] == 11
    assert t["rules"] == {"missing_member_id": 1, "unparseable_timestamp": 1, "unknown_status": 1}
    o = Store(tmp_path / "s").read("orders")
    assert o["status"].value_counts().to_dict() == {"paid": 5, "refunded": 2, "cancelled": 1}
    refund = o[(o["order_id"] == "2001009")].set_index("status")["amount"].to_dict()
    assert refund == {"paid": 39.0, "refunded": 20.0}  # partial refund: 退款金额
    assert o.loc[o["order_id"] == "2001004", "amount"].tolist() == [1299.0, 1299.0]
    assert set(o["member_id"]) == {"小鱼儿2019", "momo_li", "阿强", "小红"}
    assert set(rep["dropped_columns"]) == {"收货人姓名", "联系手机", "收货地址", "买家支付宝账号"}
    text = _all_text(tmp_path / "s")
    for personal in ["张三", "13800000001", "文三路", "fish@example.com", "aqiang@example.com"]:
        assert personal not in text, personal  # never stored, not even in quarantine


def test_generic_csv_with_yaml_mapping(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    pd.DataFrame({
        "单号": ["A1", "A2", "A3"], "客户": ["c1", "c2", ""], "时间": ["2023-01-02", "2023-01-03", "2023-01-04"],
        "金额": ["12.5", "8", "3"], "手机号": ["13800000000"] * 3, "商品": ["x", "y", "z"],
    }).to_csv(src / "sales.csv", index=False, encoding="gbk")
    (src / "mapping.yaml").write_text(
        "tables:\n  orders:\n    file: sales.csv\n    columns: {order_id: 单号, member_id: 客户, ordered_at: 时间, "
        "amount: 金额, item_id: 商品}\n    constants: {status: paid}\n", encoding="utf-8")
    rep = ingest("csv", src, tmp_path / "s", as_of=AS_OF, mapping=src / "mapping.yaml", max_bad_share=0.5)
    assert rep["tables"]["orders"]["rules"] == {"missing_member_id": 1}
    assert rep["dropped_columns"] == ["sales.csv:手机号"]
    assert rep["notes"]["encodings"]["orders"] == "gb18030"
    assert Store(tmp_path / "s").read("orders")["amount"].tolist() == [12.5, 8.0]


def test_mapping_is_validated_with_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "m.yaml"
    bad.write_text("tables:\n  orders:\n    columns: {order_no: x}\n", encoding="utf-8")
    with pytest.raises(ValueError, match="order_no.*not a contract column"):
        load_mapping(bad)
    bad.write_text("tables:\n  orders:\n    columns: {member_id: 联系手机}\n", encoding="utf-8")
    with pytest.raises(ValueError, match="personal contact data"):
        load_mapping(bad)


def test_parquet_folder_in_contract_names(tmp_path: Path) -> None:
    src = tmp_path / "raw"
    src.mkdir()
    orders_frame(order(), order(order_id="o2", amount="-3")).to_parquet(src / "orders.parquet")
    pd.DataFrame({"member_id": ["m1", "m1"], "email": ["a@b.c", "a@b.c"]}).to_parquet(src / "members.parquet")
    rep = ingest("parquet", src, tmp_path / "s", as_of=AS_OF, max_bad_share=0.6)
    assert rep["tables"]["orders"]["rules"] == {"negative_amount": 1}
    assert rep["tables"]["members"]["rules"] == {"duplicate_key": 1}
    assert rep["dropped_columns"] == ["members.parquet:email"]
    assert rep["capabilities"]["monetary"] is True and rep["capabilities"]["engagement_events"] is False


def test_store_without_prices_reports_no_monetary(tmp_path: Path) -> None:
    src = tmp_path / "raw"
    src.mkdir()
    orders_frame(order()).drop(columns=["amount"]).to_parquet(src / "orders.parquet")
    rep = ingest("parquet", src, tmp_path / "s", as_of=AS_OF)
    caps = rep["capabilities"]
    assert caps["monetary"] is False and {"ltv", "spend_tiers", "points"} <= set(caps["unsupported"])
    assert Store(tmp_path / "s").read("orders")["amount"].isna().all()


# ------------------------------------------------------------------ too many bad rows: refused, nothing written

def test_too_many_bad_rows_fails_clearly_and_writes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "raw"
    src.mkdir()
    rows = [order(order_id=f"o{i}") for i in range(10)] + [order(order_id=f"b{i}", amount="oops") for i in range(2)]
    orders_frame(*rows).to_parquet(src / "orders.parquet")
    out = tmp_path / "s"
    with pytest.raises(IngestError) as e:
        ingest("parquet", src, out, as_of=AS_OF, max_bad_share=0.05)
    msg = str(e.value)
    assert "'orders'" in msg and "non_numeric_amount: 2 rows" in msg and "orders.parquet:10" in msg
    assert "16.7%" in msg and "Nothing was written" in msg
    assert not out.exists()
    ingest("parquet", src, out, as_of=AS_OF, max_bad_share=0.2)  # a looser limit lets it through
    assert Store(out).report()["tables"]["orders"]["rows_quarantined"] == 2


def test_cli_ingest_refusal_and_summary(tmp_path: Path) -> None:
    runner = CliRunner()
    src = tmp_path / "raw"
    src.mkdir()
    rows = [order(order_id=f"o{i}") for i in range(5)] + [order(order_id="x", status="lost in post")]
    orders_frame(*rows).to_parquet(src / "orders.parquet")
    res = runner.invoke(app, ["ingest", "--source", "parquet", "--path", str(src), "--out", str(tmp_path / "s"),
                              "--as-of", AS_OF])
    assert res.exit_code == 2 and "unknown_status" in flat(res.output) and "Traceback" not in res.output
    cfg = tmp_path / "ingest.yaml"
    cfg.write_text("max_bad_share: 0.5\n", encoding="utf-8")
    res = runner.invoke(app, ["ingest", "--source", "parquet", "--path", str(src), "--out", str(tmp_path / "s"),
                              "--as-of", AS_OF, "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "s" / "validation_report.json").read_text(encoding="utf-8"))
    assert report["as_of"] == "2024-01-01 00:00:00" and report["max_bad_share"] == 0.5
    assert pd.read_parquet(tmp_path / "s" / "quarantine" / "orders.parquet")["rule"].tolist() == ["unknown_status"]
    res = runner.invoke(app, ["summary", "--store", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    for word in ("orders", "paid", "unknown_status", "2023-05-01"):
        assert word in res.output
    res = runner.invoke(app, ["summary", "--store", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "does not exist" in flat(res.output)


def test_cli_bad_as_of_is_clear(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["ingest", "--source", "completejourney", "--out", str(tmp_path / "s"),
                                   "--as-of", "yesterday-ish"])
    assert res.exit_code == 2 and "is not a date-time" in flat(res.output) and not (tmp_path / "s").exists()


def test_cli_unknown_source_is_clear(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["ingest", "--source", "excel", "--path", str(tmp_path), "--out", str(tmp_path / "s")])
    assert res.exit_code == 2 and "unknown source 'excel'" in flat(res.output)


# ------------------------------------------------------------------ adapters on tiny generated files

def _retail(invoices: list[str], dates: list[str], customers: list[float], codes: list[str] | None = None,
            ii: bool = False) -> pd.DataFrame:
    n = len(invoices)
    df = pd.DataFrame({
        "InvoiceNo": invoices, "StockCode": codes or ["85123A"] * n, "Description": ["LANTERN"] * n,
        "Quantity": [-2 if i.startswith("C") else 3 for i in invoices], "InvoiceDate": dates,
        "UnitPrice": [2.55] * n, "CustomerID": customers, "Country": ["United Kingdom"] * n,
    })
    return df.rename(columns={"InvoiceNo": "Invoice", "UnitPrice": "Price", "CustomerID": "Customer ID"}) if ii else df


def test_online_retail_adapter_rules_and_two_year_join(tmp_path: Path) -> None:
    new = _retail(["536365", "C536366", "536367", "536368", "536365"],
                  ["2010-12-01 08:26:00", "2010-12-01 09:00:00", "2010-12-02 10:00:00", "2010-12-03 10:00:00",
                   "2010-12-01 08:26:00"], [17850.0, 17850.0, np.nan, 13047.0, 17850.0],
                  ["85123A", "85123A", "85123A", "POST", "85123A"])
    old = _retail(["489434", "536365"], ["2009-12-01 07:45:00", "2010-12-01 08:26:00"], [13085.0, 17850.0], ii=True)
    new.to_parquet(tmp_path / "online_retail.parquet")
    old.to_parquet(tmp_path / "online_retail_ii.parquet")
    rep = ingest("online-retail", [tmp_path / "online_retail_ii.parquet", tmp_path / "online_retail.parquet"],
                 tmp_path / "s", as_of=AS_OF, max_bad_share=0.2)
    t = rep["tables"]["orders"]
    assert rep["notes"]["overlap_rows_dropped"] == {"online_retail_ii.parquet": 1}  # its 2010-12-01 line
    assert t["rows_in"] == 6 and t["rules"] == {"missing_member_id": 1, "non_product_line": 1, "duplicate_line": 1}
    assert set(t["expected_rules"]) == {"missing_member_id", "non_product_line"}
    o = Store(tmp_path / "s").read("orders")
    assert o["member_id"].tolist() == ["13085", "17850", "17850"]
    refund = o[o["status"] == "refunded"].iloc[0]
    assert refund["order_id"] == "C536366" and refund["amount"] == pytest.approx(5.10) and refund["quantity"] == 2
    assert o.loc[o["status"] == "paid", "amount"].tolist() == [pytest.approx(7.65)] * 2


def test_taobao_userbehavior_adapter_on_tiny_file(tmp_path: Path) -> None:
    f = tmp_path / "ub.csv"
    f.write_text("1,100,7,pv,1511544070\n1,101,7,buy,1511544080\n1,102,7,fav,1511544090\n2,100,7,scroll,1511544100\n"
                 "2,103,7,cart,1511544110\n2,104,7,pv", encoding="utf-8")
    rep = ingest("taobao-userbehavior", f, tmp_path / "s", as_of=AS_OF, max_bad_share=0.5)
    assert rep["tables"]["events"]["rules"] == {"truncated_line": 1, "unknown_event_type": 1}
    assert rep["tables"]["orders"]["rows_kept"] == 1 and rep["capabilities"]["monetary"] is False
    s = Store(tmp_path / "s")
    assert s.read("events")["type"].tolist() == ["view", "favorite", "cart"]
    o = s.read("orders").iloc[0]
    assert o["order_id"] == "1-1511544080" and pd.isna(o["amount"])
    assert o["ordered_at"] == pd.Timestamp("2017-11-25 01:21:20")  # Asia/Shanghai wall time
    assert s.read_quarantine("events")["source_row"].tolist() == ["ub.csv:4", "ub.csv:6"]
