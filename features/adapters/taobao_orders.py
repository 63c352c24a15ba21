"""Taobao / Tmall seller order export (订单报表, one row per order; UTF-8, UTF-8 with BOM or GBK) onto the contract.

Columns used: 订单编号 -> order_id, 买家会员名 -> member_id (the buyer's account name, the member key of a shop),
买家实际支付金额 -> amount, 订单创建时间 -> ordered_at, 订单状态 -> status, 宝贝标题 -> item_id (the export has
no item id; the title identifies the item), 宝贝总数量 -> quantity (optional), 退款金额 (optional).
Excel text guards (`="12345"`) around numbers are removed.

Status words map through `features.validation.STATUS_SPELLINGS` (交易成功 / 卖家已发货，等待买家确认 / 买家已付款，
等待卖家发货 -> paid, 退款成功 -> refunded, 交易关闭 -> cancelled); 等待买家付款 (not paid yet) is not a purchase
and is quarantined as unknown_status. The export holds an order's *current* status, but the contract keeps a
refund as its own row: an order that was paid and then refunded/closed (amount > 0) becomes two rows, the paid line
and the refunded/cancelled line (amount = 退款金额 when given, else the paid amount), both at the creation time
(the export has no refund time). A closed order that was never paid (amount 0) is one cancelled row.

Personal contact columns (收货人姓名, 联系手机, 联系电话, 收货地址, 买家支付宝账号, …) are dropped at the edge;
every column not listed above is not stored either.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from features.adapters import SourceData, SourceError, drop_personal, require_path
from features.adapters.tabular import read_csv_text
from features.contract import ITEM_ID, MEMBER_ID, ORDER_ID, ORDERED_AT
from features.validation import SOURCE_ROW, STATUS_SPELLINGS, map_spellings

COLUMNS = {
    "订单编号": ORDER_ID,
    "买家会员名": MEMBER_ID,
    "买家实际支付金额": "amount",
    "订单创建时间": ORDERED_AT,
    "订单状态": "status",
    "宝贝标题": ITEM_ID,
}
OPTIONAL = {"宝贝总数量": "quantity", "退款金额": "refund_amount"}


def _unguard(s: pd.Series) -> pd.Series:
    """Strip Excel text guards: ="123" -> 123, and surrounding whitespace / tabs."""
    return s.astype("string").str.strip().str.replace(r'^="?|"$', "", regex=True).str.strip()


def load(path: str | Path | None) -> SourceData:
    """Read one export CSV (or every .csv in a folder) into a raw orders frame."""
    p = require_path(path, "--source taobao-orders")
    files = sorted(p.glob("*.csv")) if p.is_dir() else [p]
    if not files:
        raise SourceError(f"taobao-orders: no .csv files in {p}")
    frames, dropped, encodings = [], [], {}
    for f in files:
        df, enc = read_csv_text(f)
        encodings[f.name] = enc
        df, d = drop_personal(df)
        dropped += [c for c in d if c not in dropped]
        missing = [c for c in COLUMNS if c not in df.columns]
        if missing:
            raise SourceError(f"{f.name}: not a Taobao/Tmall order export, missing column(s) {missing}; columns: {list(df.columns)}")
        out = pd.DataFrame({dst: _unguard(df[src]) for src, dst in {**COLUMNS, **OPTIONAL}.items() if src in df.columns})
        out[SOURCE_ROW] = f.name + ":" + pd.Series(np.arange(2, len(df) + 2), index=df.index).astype("string")
        frames.append(out)
    raw = pd.concat(frames, ignore_index=True)

    status, _ = map_spellings(raw["status"], STATUS_SPELLINGS)
    raw["status"] = status.fillna(raw["status"]) if len(raw) else raw["status"]  # unknown words stay for validation
    paid_amount = pd.to_numeric(raw["amount"].str.replace(r"^[¥￥]|,", "", regex=True), errors="coerce")
    undone = raw["status"].isin(["refunded", "cancelled"]).to_numpy(dtype=bool, na_value=False)
    was_paid = undone & (paid_amount > 0).to_numpy(dtype=bool, na_value=False)
    paid_rows = raw.loc[was_paid].assign(status="paid")
    if "refund_amount" in raw:
        refund = pd.to_numeric(raw["refund_amount"], errors="coerce")
        use = was_paid & (refund > 0).to_numpy(dtype=bool, na_value=False)
        raw.loc[use, "amount"] = raw.loc[use, "refund_amount"]
    # each added paid row goes right before its refunded/cancelled row (stable order by export line)
    pos = np.concatenate([np.flatnonzero(was_paid), np.arange(len(raw))])
    orders = pd.concat([paid_rows, raw], ignore_index=True).iloc[np.argsort(pos, kind="stable")]
    orders = orders.drop(columns=["refund_amount"], errors="ignore").reset_index(drop=True)
    return SourceData(
        source="taobao-orders",
        tables={"orders": orders},
        dropped_columns=dropped,
        capabilities={"currency": "CNY"},
        notes={
            "files": [str(f) for f in files],
            "encodings": encodings,
            "export_rows": int(len(raw)),
            "paid_rows_added_for_refunds": int(was_paid.sum()),
            "item_id": "宝贝标题 (the export has no item id)",
        },
    )
