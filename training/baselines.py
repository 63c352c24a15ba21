"""Baselines computed on the same members and cutoff as the model (DESIGN §5).

Rules (always available): days since the last paid order (churn), paid spend in the last H days (LTV).
Probabilistic (needs the `bench` extra, pymc-marketing): BG/NBD expected purchases in the next H days (churn score
is minus that) and BG/NBD × Gamma-Gamma expected spend in the next H days (LTV), fitted by MAP on each member's
order history strictly before the cutoff.
"""
from __future__ import annotations

import importlib.util
import logging
import warnings

import numpy as np
import pandas as pd

from features.contract import MEMBER_ID, ORDER_ID, ORDERED_AT
from features.store import Store

BGNBD_HINT = "BG/NBD baselines need the bench extra: pip install -e '.[bench]' (pymc-marketing)"


def has_pymc_marketing() -> bool:
    return importlib.util.find_spec("pymc_marketing") is not None


def read_orders(store: Store, before: pd.Timestamp) -> pd.DataFrame:
    """Order lines strictly before `before` (member_id, order_id, ordered_at, amount, status)."""
    cols = [MEMBER_ID, ORDER_ID, ORDERED_AT, "amount", "status"]
    df = store.read("orders")[cols]
    df = df[df[ORDERED_AT] < before]
    df[MEMBER_ID] = df[MEMBER_ID].astype("string")
    return df.reset_index(drop=True)


def recent_spend(orders: pd.DataFrame, cutoff: pd.Timestamp, days: int, members: pd.Series) -> np.ndarray:
    """Net paid spend in [cutoff − days, cutoff) per member (paid lines minus refunded/cancelled rows), ≥ 0."""
    w = orders[(orders[ORDERED_AT] >= cutoff - pd.Timedelta(days=days)) & (orders[ORDERED_AT] < cutoff)]
    sign = np.where(w["status"].astype("string").fillna("paid").to_numpy() == "paid", 1.0, -1.0)
    amount = w["amount"].astype("float64").fillna(0.0).to_numpy() * sign
    per = pd.Series(amount, index=w[MEMBER_ID].to_numpy()).groupby(level=0).sum().clip(lower=0.0)
    return per.reindex(members.astype(str).to_numpy()).fillna(0.0).to_numpy()


def rfm(orders: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    """pymc-marketing's rfm_summary (days) over paid orders before the cutoff: one row per member who bought."""
    from pymc_marketing.clv.utils import rfm_summary

    paid = orders[orders["status"].astype("string").fillna("paid") == "paid"]
    per_order = (paid.groupby([MEMBER_ID, ORDER_ID], observed=True)
                 .agg(ordered_at=(ORDERED_AT, "min"), amount=("amount", "sum")).reset_index())
    per_order["amount"] = per_order["amount"].astype("float64").fillna(0.0)
    tx = pd.DataFrame({"customer_id": per_order[MEMBER_ID].astype(str).to_numpy(),
                       "date": pd.to_datetime(per_order["ordered_at"]).to_numpy(),
                       "amount": per_order["amount"].to_numpy()})
    last_day = (cutoff - pd.Timedelta(days=1)).normalize()
    return rfm_summary(tx, "customer_id", "date", monetary_value_col="amount", observation_period_end=last_day,
                       time_unit="D")


def bgnbd_expectations(orders: pd.DataFrame, cutoff: pd.Timestamp, horizon_days: int,
                       members: pd.Series) -> pd.DataFrame:
    """BG/NBD expected purchases and BG/NBD × Gamma-Gamma expected spend in the next `horizon_days`, per member.

    Fitted by MAP (fast, matches the lifetimes library's MLE closely). Members without a paid order before the
    cutoff get 0 expected purchases.
    """
    from pymc_marketing.clv import BetaGeoModel, GammaGammaModel

    for name in ("pymc", "pytensor", "pymc_marketing", "pymc_extras"):
        logging.getLogger(name).setLevel(logging.ERROR)
    data = rfm(orders, cutoff)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bg = BetaGeoModel(data=data[["customer_id", "frequency", "recency", "T"]])
        bg.fit(fit_method="map", progressbar=False)
        purchases = bg.expected_purchases(future_t=horizon_days).mean(("chain", "draw")).to_pandas()
        repeat = data[(data["frequency"] > 0) & (data["monetary_value"] > 0)]
        gg = GammaGammaModel(data=repeat[["customer_id", "frequency", "monetary_value"]])
        gg.fit(fit_method="map", progressbar=False)
        spend = gg.expected_customer_spend(data=data[["customer_id", "frequency", "monetary_value"]])
        spend = spend.mean(("chain", "draw")).to_pandas()
    ids = members.astype(str).to_numpy()
    out = pd.DataFrame({MEMBER_ID: ids})
    per_member = pd.Series(purchases.to_numpy(), index=purchases.index.astype(str))
    out["expected_purchases"] = per_member.reindex(ids).fillna(0.0).to_numpy()
    s = pd.Series(spend.to_numpy(), index=spend.index.astype(str)).reindex(ids)
    out["expected_spend"] = (out["expected_purchases"] * s.fillna(s.mean()).to_numpy()).clip(lower=0.0)
    return out
