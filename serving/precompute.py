"""Answers for every member of the online table, computed once at start-up: /score by member_id becomes a lookup.

The online table is a snapshot as of one date and a worker's models never change, so a member's churn, LTV,
next-purchase and top recommendations are a pure function of that snapshot. Computing them for all members in one
vectorised call per model (the same `serving.compose` functions batch scoring uses, so the numbers are the batch
numbers) costs about what a few hundred single-member calls cost, and turns the per-request work from ~20 ms of
pandas/LightGBM/recs CPU into a dictionary lookup. Why this matters here: on a 2-core machine shared with other jobs
every millisecond of CPU per request multiplies into the tail (profile in benchmarks/results/serving.json, notes).

Bounded: above `precompute_max_members` (serving config) nothing is precomputed and every request is scored live;
inline histories, top_n above the precomputed list, and excluded categories that empty the list are always live.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.contract import MEMBER_ID
from serving.compose import (PROBABILITY_PREFIX, churn_columns, ltv_columns, probability_days, recommend_frame,
                             recs_columns, timing_columns)
from serving.schemas import Churn, Ltv, NextPurchase, Recommendation

log = logging.getLogger("member_ml.serving.precompute")


@dataclass
class MemberAnswers:
    """Per-member model answers, positionally indexed by `index[member_id]`."""

    index: dict[str, int]
    top_n: int
    columns: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    recs: dict[str, list[list[Any]]] | None = None  # rec_items / rec_scores / rec_reasons: one list per member
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def position(self, member_id: str) -> int | None:
        return self.index.get(member_id)

    def churn_answer(self, i: int) -> Churn | None:
        c = self.columns.get("churn")
        if c is None:
            return None
        return Churn(probability=float(c["churn_probability"][i]), reasons=list(c["churn_reasons"][i]))

    def ltv_answer(self, i: int) -> Ltv | None:
        c = self.columns.get("ltv")
        return None if c is None else Ltv(value=float(c["ltv"][i]))

    def next_purchase_answer(self, i: int) -> NextPurchase | None:
        c = self.columns.get("timing")
        if c is None:
            return None
        days = probability_days(list(c))
        date = c["next_purchase_date"][i]
        med, exp = float(c["median_days"][i]), float(c["expected_days"][i])
        return NextPurchase(
            probability_within_days={d: float(c[f"{PROBABILITY_PREFIX}{d}"][i]) for d in days},
            median_days=None if np.isnan(med) else med, expected_days=None if np.isnan(exp) else exp,
            expected_date=None if pd.isna(date) else pd.Timestamp(date).date())

    def recommendations(self, i: int, n: int, exclude: set[str] | frozenset[str] = frozenset(),
                        category: dict[str, str] | None = None) -> list[Recommendation] | None:
        """The member's first n precomputed items (skipping excluded categories), or None when the precomputed
        list cannot answer: n above it, or exclusions leaving fewer than n of a list that was cut at top_n."""
        if self.recs is None or n > self.top_n:
            return None
        items, scores, reasons = (self.recs[k][i] for k in ("rec_items", "rec_scores", "rec_reasons"))
        keep = range(len(items))
        if exclude:
            cat = category or {}
            keep = [j for j in keep if cat.get(items[j]) not in exclude]
            if len(keep) < n and len(items) >= self.top_n:
                return None
        return [Recommendation(rank=r + 1, item_id=items[j], score=scores[j], reason=reasons[j])
                for r, j in enumerate(list(keep)[:n])]


def _arrays(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {c: frame[c].to_numpy() for c in frame.columns if c != MEMBER_ID}


def _recent_items(table_path: Any) -> pd.DataFrame:
    """All members' recent items from the online table file (the rows `OnlineFeatureTable.recent_items` serves)."""
    import duckdb

    con = duckdb.connect(str(table_path), read_only=True)
    try:
        items = con.execute("SELECT * FROM recent_items ORDER BY member_id, item_id").df()
    finally:
        con.close()
    for c in ("member_id", "item_id", "category"):
        if c in items.columns:
            items[c] = items[c].astype("string")
    return items


def precompute(online: Any, models: Any, config: Any) -> MemberAnswers | None:
    """Score every member of `online` (serving.online.OnlineLookup) with each loaded model; None when disabled or
    the table is above the configured bound. A model that fails here is recorded and served live instead."""
    n = len(online.table)
    if not config.precompute_member_answers or n > config.precompute_max_members:
        if config.precompute_member_answers:
            log.info("online table has %d members (> precompute_max_members %d): scoring live", n,
                     config.precompute_max_members)
        return None
    t0 = time.perf_counter()
    feats = online.table.frame
    ids = feats[MEMBER_ID].astype("string").tolist()
    out = MemberAnswers(index={m: i for i, m in enumerate(ids)}, top_n=config.precompute_top_n)
    as_of = online.as_of
    calls = {
        "churn": lambda m: churn_columns(m, feats, config.top_reasons),
        "ltv": lambda m: ltv_columns(m, feats),
        "timing": lambda m: timing_columns(m, feats, as_of),
    }
    for name, call in calls.items():
        m = models.get(name) if name in config.models else None
        if m is None:
            continue
        try:
            frame = call(m.python_model)
            if frame[MEMBER_ID].astype("string").tolist() != ids:
                raise ValueError("rows came back in another order or count")
            out.columns[name] = _arrays(frame)
        except Exception as e:  # noqa: BLE001 - served live instead, never fatal
            out.failed[name] = f"{type(e).__name__}: {e}"
            log.exception("precomputing %s failed: scoring it live", name)
    m = models.get("recs") if "recs" in config.models else None
    if m is not None:
        try:
            ranked = recommend_frame(m.python_model, _recent_items(online.table.path), ids, out.top_n, as_of)
            lists = recs_columns(ranked, ids, out.top_n)
            if lists[MEMBER_ID].astype("string").tolist() != ids:
                raise ValueError("rows came back in another order or count")
            out.recs = {k: lists[k].tolist() for k in ("rec_items", "rec_scores", "rec_reasons")}
        except Exception as e:  # noqa: BLE001
            out.failed["recs"] = f"{type(e).__name__}: {e}"
            log.exception("precomputing recs failed: recommending live")
    out.seconds = time.perf_counter() - t0
    log.info("precomputed answers for %d members in %.1f s (failed: %s)", n, out.seconds, out.failed or "none")
    return out
