"""UCI Online Retail (2010-12 .. 2011-12) and Online Retail II (2009-12 .. 2010-12) onto the contract.

- One line per invoice line -> one orders row: InvoiceNo -> order_id, CustomerID -> member_id (17850.0 -> "17850"),
  StockCode -> item_id, InvoiceDate -> ordered_at, Quantity -> quantity, amount = Quantity x UnitPrice (rounded to
  pence). Description / Country / UnitPrice travel along as context (quarantine only; never stored).
- Cancellation invoices ("C…") become `refunded` rows with amount = |Quantity x UnitPrice| (positive, the money
  given back) under their own invoice number (the data does not say which invoice they cancel).
- Lines without a CustomerID (guest purchases, ~25% of lines) are quarantined by `missing_member_id`; the rule is
  declared *expected* for this source, so it does not count against the bad-row limit.
- Non-product stock codes (postage POST/DOT/C2, manual M, discount D, samples S, bad debt B, BANK CHARGES,
  AMAZONFEE, CRUK commission, ADJUST*, TEST*, gift vouchers gift_0001_*) are quarantined by `non_product_line`
  (also expected): they are not purchases of an item, would top every popularity list, and vouchers would count
  the same money twice (when bought and when spent).
- Several files (a folder, or a list of paths) are joined into one store: files are ordered by their first date and
  each earlier file loses its rows from the later file's first day on (Online Retail II's 2010-12-01..09 rows are
  the same lines as the start of the 2010-2011 file). Those overlap rows are noted in the report, not ingested.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from features.adapters import SourceData, SourceError, drop_personal
from features.adapters.tabular import read_csv_text
from features.contract import ITEM_ID, MEMBER_ID, ORDER_ID, ORDERED_AT
from features.validation import SOURCE_ROW

_ALIASES = {
    "invoiceno": "invoice", "invoice": "invoice", "stockcode": "stock_code", "description": "description",
    "quantity": "quantity", "invoicedate": "invoice_date", "unitprice": "unit_price", "price": "unit_price",
    "customerid": "customer_id", "customer id": "customer_id", "country": "country",
}
_REQUIRED = ("invoice", "stock_code", "quantity", "invoice_date", "unit_price", "customer_id")
NON_PRODUCT_CODES = frozenset({
    "POST", "DOT", "C2", "M", "D", "S", "B", "BANK CHARGES", "AMAZONFEE", "CRUK", "ADJUST", "ADJUST2",
    "TEST001", "TEST002", "CARRIAGE",
})


def _files(path: str | Path | list[str | Path] | None) -> list[Path]:
    if path is None:
        raise SourceError("--path is required for --source online-retail (a file, a folder, or several paths)")
    paths = [Path(p) for p in (path if isinstance(path, (list, tuple)) else [path])]
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in (".parquet", ".csv", ".xlsx"))
            if not found:
                raise SourceError(f"online-retail: no .parquet/.csv/.xlsx files in {p}")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise SourceError(f"online-retail: path {p} does not exist")
    return out


def _read(f: Path) -> pd.DataFrame:
    if f.suffix.lower() == ".parquet":
        df = pd.read_parquet(f)
    elif f.suffix.lower() == ".csv":
        df, _ = read_csv_text(f)
    else:
        try:
            df = pd.read_excel(f)
        except ImportError as e:
            raise SourceError(f"{f}: reading .xlsx needs openpyxl ({e}); convert the sheet to CSV or Parquet") from None
    df = df.rename(columns={c: _ALIASES.get(str(c).strip().lower(), c) for c in df.columns})
    missing = [c for c in _REQUIRED if c not in df.columns]
    if missing:
        raise SourceError(f"{f}: not an Online Retail file, missing column(s) {missing}; columns: {list(df.columns)}")
    df[SOURCE_ROW] = f.name + ":" + pd.Series(np.arange(len(df)), index=df.index).astype("string")
    return df


def is_non_product(stock_code: pd.Series) -> np.ndarray:
    """True for stock codes that are services/adjustments rather than products."""
    up = stock_code.astype("string").str.strip().str.upper()
    return (up.isin(NON_PRODUCT_CODES) | up.str.startswith("GIFT_") | up.str.startswith("TEST")).to_numpy(
        dtype=bool, na_value=False
    )


def load(path: str | Path | list[str | Path] | None) -> SourceData:
    """Read one or more Online Retail files into a raw orders frame (see module docstring)."""
    frames = [(f, _read(f)) for f in _files(path)]
    if len(frames) == 1:
        starts = [(pd.NaT, frames[0][0], frames[0][1])]
    else:
        starts = [(pd.to_datetime(df["invoice_date"], errors="coerce", format="mixed").min(), f, df) for f, df in frames]
    starts.sort(key=lambda x: (pd.Timestamp.max if pd.isna(x[0]) else x[0]))
    overlap: dict[str, int] = {}
    parts = []
    for i, (_, f, df) in enumerate(starts):
        later = [s for s, _, _ in starts[i + 1:] if pd.notna(s)]
        if later:
            cut = min(later).normalize()
            dates = pd.to_datetime(df["invoice_date"], errors="coerce")
            drop = (dates >= cut).to_numpy(dtype=bool, na_value=False)
            overlap[f.name] = int(drop.sum())
            df = df.loc[~drop]
        parts.append(df)
    raw = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)
    raw, dropped = drop_personal(raw)

    invoice = raw["invoice"].astype("string").str.strip()
    cancel = invoice.str.upper().str.startswith("C").to_numpy(dtype=bool, na_value=False)
    qty = pd.to_numeric(raw["quantity"], errors="coerce")
    price = pd.to_numeric(raw["unit_price"], errors="coerce")
    amount = (qty * price).round(2)
    amount = amount.where(~cancel, amount.abs())
    orders = pd.DataFrame({
        ORDER_ID: invoice,
        MEMBER_ID: raw["customer_id"],
        ORDERED_AT: raw["invoice_date"],
        "amount": amount,
        ITEM_ID: raw["stock_code"].astype("string").str.strip(),
        "quantity": raw["quantity"],
        "status": np.where(cancel, "refunded", "paid"),
        "unit_price": raw["unit_price"],
        "description": raw.get("description"),
        "country": raw.get("country"),
        SOURCE_ROW: raw[SOURCE_ROW],
    })
    non_product = is_non_product(raw["stock_code"])
    return SourceData(
        source="online-retail",
        tables={"orders": orders},
        masks={"orders": {"non_product_line": non_product}},
        expected_rules={"orders": {
            "missing_member_id": "guest purchases: Online Retail lines without a CustomerID cannot belong to a member",
            "non_product_line": "postage, fees, adjustments and gift vouchers are not item purchases",
        }},
        dropped_columns=[f"{c}" for c in dropped],
        capabilities={"currency": "GBP"},
        notes={
            "files": [str(f) for f, _ in frames],
            "overlap_rows_dropped": overlap,
            "cancellation_lines": int(cancel.sum()),
            "refund_order_id": "cancellation invoices keep their own C-number (the original invoice is not given)",
        },
    )
