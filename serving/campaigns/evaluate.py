"""Campaign evaluation once outcomes arrive: treated vs control per audience (DESIGN §8, document 001: conversion,
repurchase, ROI).

For every member of a built campaign, the store's order lines in [send date, send date + `days`) give: orders
(distinct paid orders), conversion (any paid order) and revenue (paid amount net of refunds and cancellations in the
window). Per audience, for treated and control: conversion rate, orders and revenue per member; uplift = treated −
control with a 95% interval (difference of means, unequal variances, normal approximation: the groups are large and
independent by the random holdout); incremental revenue = revenue uplift × treated members; cost = each treated
member's contact cost + the conversion cost of each treated member who bought; ROI = (incremental revenue − cost) ÷
cost, with the interval carried over from the revenue uplift's.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from features.contract import MEMBER_ID
from features.store import Store

Z95 = 1.959963984540054
METRICS = ("converted", "orders", "revenue")


def outcomes(store: Store, members: pd.Series, start: pd.Timestamp, days: int) -> pd.DataFrame:
    """member_id, orders, converted, revenue in [start, start + days) for `members` (zeros when nothing came)."""
    import duckdb

    end = start + pd.Timedelta(days=days)
    path = os.fspath(store.table_path("orders")).replace("'", "''")
    ids = pd.DataFrame({MEMBER_ID: pd.Series(members, dtype="string").drop_duplicates().to_numpy()})
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
        con.register("campaign_members", ids)
        cols = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall()}
        status = "COALESCE(status, 'paid')" if "status" in cols else "'paid'"
        got = con.execute(f"""
            SELECT o.member_id,
                   COUNT(DISTINCT CASE WHEN {status} = 'paid' THEN o.order_id END) AS orders,
                   SUM(CASE WHEN {status} = 'paid' THEN o.amount ELSE -o.amount END) AS revenue
            FROM read_parquet('{path}') o
            JOIN campaign_members c ON o.member_id = c.member_id
            WHERE o.ordered_at >= TIMESTAMP '{start.isoformat(sep=' ')}'
              AND o.ordered_at < TIMESTAMP '{end.isoformat(sep=' ')}'
            GROUP BY o.member_id""").df()
    finally:
        con.close()
    got[MEMBER_ID] = got[MEMBER_ID].astype("string")
    out = ids.merge(got, on=MEMBER_ID, how="left")
    out["orders"] = out["orders"].fillna(0).astype("float64")
    out["revenue"] = out["revenue"].fillna(0.0).astype("float64")
    out["converted"] = (out["orders"] > 0).astype("float64")
    return out


def _diff(t: np.ndarray, c: np.ndarray) -> tuple[float, float, float]:
    """Difference of means with a 95% normal interval (unequal variances); NaN interval when a group has < 2."""
    if len(t) == 0 or len(c) == 0:
        return float("nan"), float("nan"), float("nan")
    d = float(t.mean() - c.mean())
    if len(t) < 2 or len(c) < 2:
        return d, float("nan"), float("nan")
    se = float(np.sqrt(t.var(ddof=1) / len(t) + c.var(ddof=1) / len(c)))
    return d, d - Z95 * se, d + Z95 * se


def evaluate_campaign(rows: pd.DataFrame, store: Store, send_date: object, days: int,
                      audiences: list[str] | None = None) -> pd.DataFrame:
    """One row per audience (every name in `audiences`, empty ones included, else those in `rows`): sizes, rates
    per group, uplifts with 95% intervals, incremental revenue, cost, ROI."""
    if days < 1:
        raise ValueError(f"days must be ≥ 1, got {days}")
    need = [MEMBER_ID, "audience", "control"]
    missing = [c for c in need if c not in rows.columns]
    if missing:
        raise ValueError(f"campaign rows lack column(s) {missing}")
    start = pd.Timestamp(send_date).normalize()
    out = outcomes(store, rows[MEMBER_ID], start, days)
    r = rows.merge(out, on=MEMBER_ID, how="left")
    result = []
    names = list(dict.fromkeys([*(audiences or []), *r["audience"].astype(str).unique().tolist()]))
    for name in names:
        g = r[r["audience"].astype(str) == name]
        ctl = g["control"].astype(bool).to_numpy()
        t, c = g[~ctl], g[ctl]
        rec: dict[str, Any] = {"audience": name, "treated": int(len(t)), "control": int(len(c))}
        for m in METRICS:
            tv, cv = t[m].to_numpy(float), c[m].to_numpy(float)
            rec[f"{m}_treated"] = float(tv.mean()) if len(tv) else float("nan")
            rec[f"{m}_control"] = float(cv.mean()) if len(cv) else float("nan")
            d, lo, hi = _diff(tv, cv)
            rec[f"{m}_uplift"], rec[f"{m}_uplift_lo"], rec[f"{m}_uplift_hi"] = d, lo, hi
        n_t = len(t)
        cost = float(t.get("offer_cost_member", pd.Series(0.0, index=t.index)).sum()
                     + (t.get("offer_cost_conversion", pd.Series(0.0, index=t.index)) * t["converted"]).sum())
        inc = rec["revenue_uplift"] * n_t
        rec["incremental_revenue"] = inc
        rec["incremental_revenue_lo"] = rec["revenue_uplift_lo"] * n_t
        rec["incremental_revenue_hi"] = rec["revenue_uplift_hi"] * n_t
        rec["cost"] = cost
        rec["roi"] = (inc - cost) / cost if cost > 0 else float("nan")
        rec["roi_lo"] = (rec["incremental_revenue_lo"] - cost) / cost if cost > 0 else float("nan")
        rec["roi_hi"] = (rec["incremental_revenue_hi"] - cost) / cost if cost > 0 else float("nan")
        result.append(rec)
    res = pd.DataFrame(result)
    res.attrs.update({"send_date": start.date().isoformat(), "days": days})
    return res


def table_rows(res: pd.DataFrame) -> list[dict[str, Any]]:
    """The evaluation as short, readable rows for the CLI (rates in %, money rounded, intervals in brackets)."""
    rows = []
    for r in res.to_dict("records"):
        def ci(m: str, scale: float = 1.0, nd: int = 1) -> str:
            lo, hi = r[f"{m}_uplift_lo"], r[f"{m}_uplift_hi"]
            if np.isnan(lo):
                return f"{r[f'{m}_uplift'] * scale:.{nd}f}"
            return f"{r[f'{m}_uplift'] * scale:.{nd}f} [{lo * scale:.{nd}f}, {hi * scale:.{nd}f}]"
        rows.append({
            "audience": r["audience"], "treated": r["treated"], "control": r["control"],
            "conv. treated %": round(100 * r["converted_treated"], 1),
            "conv. control %": round(100 * r["converted_control"], 1),
            "conv. uplift pp [95%]": ci("converted", 100),
            "revenue/member uplift [95%]": ci("revenue", 1, 2),
            "incremental revenue": None if np.isnan(r["incremental_revenue"]) else round(r["incremental_revenue"]),
            "cost": round(r["cost"], 0),
            "ROI": None if np.isnan(r["roi"]) else round(r["roi"], 2),
        })
    return rows
