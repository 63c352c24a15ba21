"""Replenishment cycles: the estimator (carried by the timing model, `member_pyfunc.replenishment`) and its
evaluation: a held-out backtest on any store with categories, and the error against a synthetic store's truth.

Backtest at a cutoff T (cycles from rows before T only; outcomes from [T, T+H)):
- `hit_rate_14d`: share of reminder pairs due in [T − grace, T + 14 days) whose category the member bought within
  14 days of T; next to `base_rate_14d`, the same share over every reminder pair, and their ratio `lift_14d`;
- `due_mae_days`: mean |first purchase of the category after T − predicted due date| (a due date already past counts
  as T) over reminder pairs bought again within H (`due_mae_days_all_pairs`: over every pair with a cycle); the
  baseline puts every pair on its category's median cycle.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from features.contract import MEMBER_ID
from features.engine import as_timestamp
from training.member_pyfunc.replenishment import (CATEGORY, CYCLE_COLUMNS, ReplenishmentParams, due_within,
                                                  estimate_cycles, member_summary)

__all__ = ["CYCLE_COLUMNS", "ReplenishmentParams", "cycle_error_vs_truth", "due_within", "estimate_cycles",
           "member_summary", "next_purchases", "replenishment_backtest"]


def _orders_and_items(source: Any) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    if isinstance(source, pd.DataFrame):
        return source, None
    if hasattr(source, "read"):
        return source.read("orders"), source.read_optional("items")
    if isinstance(source, Mapping):
        return source["orders"], source.get("items")
    raise TypeError(f"source must be a Store, a dict of tables or an orders DataFrame, got {type(source).__name__}")


def next_purchases(orders: pd.DataFrame, cutoff: pd.Timestamp, horizon: int,
                   items: pd.DataFrame | None = None) -> pd.DataFrame:
    """First paid purchase day per member × category in [cutoff, cutoff + horizon)."""
    ts = pd.to_datetime(orders["ordered_at"])
    m = (ts >= cutoff) & (ts < cutoff + pd.Timedelta(days=horizon))
    if "status" in orders.columns:
        m &= orders["status"].astype("string").fillna("paid").eq("paid").to_numpy(dtype=bool)
    w = orders[m]
    cat = w[CATEGORY].astype("string") if CATEGORY in w.columns else pd.Series(pd.NA, index=w.index, dtype="string")
    if items is not None and len(items) and "item_id" in w.columns and CATEGORY in items.columns:
        lookup = items.dropna(subset=["item_id"]).drop_duplicates("item_id").set_index("item_id")[CATEGORY]
        cat = cat.fillna(w["item_id"].map(lookup).astype("string"))
    f = pd.DataFrame({MEMBER_ID: w[MEMBER_ID].astype("string"), CATEGORY: cat, "at": ts[m]}).dropna()
    return f.groupby([MEMBER_ID, CATEGORY], as_index=False)["at"].min().rename(columns={"at": "next_at"})


def replenishment_backtest(source: Any, cutoff: Any, *, horizon: int = 90, window: int = 14,
                           grace_days: float = 7.0,
                           params: ReplenishmentParams | Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Held-out quality of the cycles estimated before `cutoff` (see the module docstring)."""
    t = as_timestamp(cutoff, "cutoff")
    orders, items = _orders_and_items(source)
    cycles = estimate_cycles(orders, t, items=items, params=params)
    if cycles.empty:
        raise ValueError(f"no member × category has enough purchases before {t.date()} (does the store have "
                         "categories?)")
    nxt = next_purchases(orders, t, horizon, items)
    j = cycles.merge(nxt, on=[MEMBER_ID, CATEGORY], how="left")
    days_to_next = ((j["next_at"] - t) / pd.Timedelta(days=1)).to_numpy(dtype="float64", na_value=np.nan)
    bought_window = np.nan_to_num(days_to_next, nan=np.inf) < window
    reminder = j["reminder"].to_numpy(dtype=bool)
    due = reminder & (j["days_until_due"].to_numpy() >= -grace_days) & (j["days_until_due"].to_numpy() < window)
    hit = float(bought_window[due].mean()) if due.any() else float("nan")
    base = float(bought_window[reminder].mean()) if reminder.any() else float("nan")
    bought = np.isfinite(days_to_next)
    pred = np.maximum(j["days_until_due"].to_numpy(dtype="float64"), 0.0)
    cat_median = j.groupby(CATEGORY)["cycle_days"].transform("median").to_numpy(dtype="float64")
    since_last = ((t - j["last_purchase_at"]) / pd.Timedelta(days=1)).to_numpy(dtype="float64")
    pred_base = np.maximum(cat_median - since_last, 0.0)
    def mae(p: np.ndarray, m: np.ndarray) -> float:
        return float(np.mean(np.abs(p[m] - days_to_next[m]))) if m.any() else float("nan")

    rem_bought = bought & reminder
    return {
        "split": {"cutoff": t.strftime("%Y-%m-%d"), "horizon_days": horizon, "window_days": window,
                  "grace_days": grace_days, "pairs": int(len(j)), "reminder_pairs": int(reminder.sum()),
                  "due_pairs": int(due.sum()), "reminder_pairs_bought": int(rem_bought.sum()),
                  "members": int(j[MEMBER_ID].nunique())},
        "model": {f"hit_rate_{window}d": hit, f"lift_{window}d": hit / base if base and base > 0 else float("nan"),
                  "due_mae_days": mae(pred, rem_bought), "due_mae_days_all_pairs": mae(pred, bought)},
        "baselines": {"all_reminder_pairs": {f"hit_rate_{window}d": base},
                      "category_median_cycle": {"due_mae_days": mae(pred_base, rem_bought),
                                                "due_mae_days_all_pairs": mae(pred_base, bought)}},
    }


def cycle_error_vs_truth(cycles: pd.DataFrame, truth: pd.DataFrame, *, truth_col: str = "cycle_days",
                         min_purchases: int = 4) -> dict[str, float]:
    """|estimated − true| ÷ true cycle for pairs with ≥ `min_purchases` purchases that have a ground-truth cycle
    (synthetic stores): median and mean relative error, share within 15%, and the number of pairs compared."""
    missing = [c for c in (MEMBER_ID, CATEGORY, truth_col) if c not in truth.columns]
    if missing:
        raise ValueError(f"truth is missing column(s) {missing}; it has {list(truth.columns)}")
    est = cycles[cycles["n_purchases"] >= min_purchases][[MEMBER_ID, CATEGORY, "cycle_days"]]
    tr = pd.DataFrame({MEMBER_ID: truth[MEMBER_ID].astype("string"), CATEGORY: truth[CATEGORY].astype("string"),
                       "true_cycle": pd.to_numeric(truth[truth_col], errors="coerce")})
    j = est.merge(tr, on=[MEMBER_ID, CATEGORY], how="inner")
    j = j[j["true_cycle"].notna() & (j["true_cycle"] > 0)]
    if j.empty:
        return {"pairs": 0, "median_rel_error": float("nan"), "mean_rel_error": float("nan"),
                "share_within_15pct": float("nan")}
    rel = ((j["cycle_days"] - j["true_cycle"]).abs() / j["true_cycle"]).to_numpy(dtype="float64")
    return {"pairs": int(len(j)), "median_rel_error": float(np.median(rel)), "mean_rel_error": float(rel.mean()),
            "share_within_15pct": float((rel <= 0.15).mean())}
