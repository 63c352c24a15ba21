"""The champion models composed for any number of members: the one code path behind /score and batch scoring.

Each model is called exactly as serving calls it (`python_model.predict(None, frame, params)`), and its raw output is
turned into named columns here, once: `churn_columns`, `ltv_columns`, `timing_columns`, `recs_columns`. The online
service takes row 0 of these frames and wraps it into its response models (`churn_answer`, `ltv_answer`,
`next_purchase_answer`, `recommendation_answers`); batch scoring (serving/batch.py) writes the same columns for every
member. So one member's batch row and the /score answer come from the same functions (tested).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from features.contract import MEMBER_ID
from serving.schemas import Churn, Ltv, NextPurchase, Recommendation

PROBABILITY_PREFIX = "p_"
TIMING_SUMMARY = ("median_days", "expected_days", "next_purchase_date")
RECS_LISTS = ("rec_items", "rec_scores", "rec_reasons")


def _num(v: Any) -> float | None:
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    f = float(v)
    return None if math.isnan(f) else f


def probability_days(columns: Sequence[str]) -> list[str]:
    """The horizons d (as strings) of the timing model's `p_<d>` columns, in column order."""
    return [c.removeprefix(PROBABILITY_PREFIX) for c in columns
            if c.startswith(PROBABILITY_PREFIX) and c.removeprefix(PROBABILITY_PREFIX).isdigit()]


# --------------------------------------------------------------------------------------------------- model calls

def churn_columns(model: Any, feats: pd.DataFrame, top_reasons: int) -> pd.DataFrame:
    """member_id, churn_probability, churn_reasons (the model's non-empty reasons, at most `top_reasons`)."""
    res = model.predict(None, feats)
    reason_cols = [c for c in res.columns if c.startswith("reason_")]
    reasons = res[reason_cols].to_numpy(dtype=object) if reason_cols else np.empty((len(res), 0), dtype=object)
    lists = [[str(r) for r in row if isinstance(r, str) and r][:top_reasons] for row in reasons]
    return pd.DataFrame({MEMBER_ID: res[MEMBER_ID].astype("string").to_numpy(),
                         "churn_probability": res["churn_probability"].astype("float64").to_numpy(),
                         "churn_reasons": lists})


def ltv_columns(model: Any, feats: pd.DataFrame) -> pd.DataFrame:
    """member_id, ltv (expected paid spend over the model's horizon)."""
    res = model.predict(None, feats)
    return pd.DataFrame({MEMBER_ID: res[MEMBER_ID].astype("string").to_numpy(),
                         "ltv": res["ltv"].astype("float64").to_numpy()})


def timing_columns(model: Any, feats: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """member_id, p_<d> (P(next order within d days)), median_days, expected_days, next_purchase_date."""
    res = model.predict(None, feats, params={"as_of": as_of})
    probs = [f"{PROBABILITY_PREFIX}{d}" for d in probability_days(res.columns)]
    out = pd.DataFrame({MEMBER_ID: res[MEMBER_ID].astype("string").to_numpy()})
    for c in probs:
        out[c] = res[c].astype("float64").to_numpy()
    for c in ("median_days", "expected_days"):
        out[c] = res[c].astype("float64").to_numpy() if c in res.columns else np.nan
    date = res["next_purchase_date"] if "next_purchase_date" in res.columns else pd.Series(pd.NaT, index=res.index)
    out["next_purchase_date"] = pd.to_datetime(date).dt.normalize().astype("datetime64[us]").to_numpy()
    return out


def recommend_frame(model: Any, history: pd.DataFrame, member_ids: Sequence[str], top_n: int,
                    as_of: pd.Timestamp) -> pd.DataFrame:
    """The recs model's ranked rows (member_id, rank, item_id, score, reason) for `member_ids`.

    `history` is the members' item summary (the online table's `recent_items` rows, or `summarise_history` over
    the same 365 days: bought and seen items with the event counts the ranker is trained on);
    members without any row get a bare member_id row: the model's popularity fallback for new members.
    """
    ids = pd.Series(list(member_ids), dtype="string")
    bare = ids[~ids.isin(history[MEMBER_ID].astype("string").unique())] if len(history) else ids
    frame = history
    if len(bare):
        frame = pd.concat([history, pd.DataFrame({MEMBER_ID: bare.to_numpy()})], ignore_index=True) \
            if len(history) else pd.DataFrame({MEMBER_ID: pd.array(bare.to_numpy(), dtype="string")})
    if len(frame) == 0:
        return pd.DataFrame(columns=[MEMBER_ID, "rank", "item_id", "score", "reason"])
    return model.predict(None, frame, params={"top_n": int(top_n), "as_of": as_of})


def recs_arrays(ranked: pd.DataFrame, member_ids: Sequence[str], top_n: int) -> dict[str, Any]:
    """rec_items, rec_scores, rec_reasons as Arrow list arrays aligned with `member_ids`: each member's top `top_n`
    in rank order (an empty list for a member without any ranked row). Vectorised: no per-member Python work, so
    batch scoring can write a million members' lists without building Python lists."""
    import pyarrow as pa

    want = pd.Index(pd.array(list(member_ids), dtype="string"))
    uniq = want.unique()
    pos = np.asarray(uniq.get_indexer(pd.Index(ranked[MEMBER_ID].astype("string"))), dtype=np.int64)
    keep = np.flatnonzero(pos >= 0)
    pos = pos[keep]
    srt = np.lexsort((ranked["rank"].to_numpy()[keep], pos))  # by member (in `member_ids` order), then rank; stable
    order, spos = keep[srt], pos[srt]
    starts = np.flatnonzero(np.r_[True, spos[1:] != spos[:-1]]) if len(spos) else np.zeros(0, dtype=np.int64)
    within = np.arange(len(spos)) - np.repeat(starts, np.diff(np.r_[starts, len(spos)]))
    order, spos = order[within < top_n], spos[within < top_n]
    offsets = pa.array(np.r_[0, np.cumsum(np.bincount(spos, minlength=len(uniq)))].astype(np.int32))
    take = ranked.iloc[order]
    back = None if want.is_unique else pa.array(uniq.get_indexer(want))

    def lists(col: str, typ: Any) -> Any:
        values = take[col].astype("string") if typ == pa.string() else take[col].astype("float64")
        arr = pa.ListArray.from_arrays(offsets, pa.array(values, type=typ, from_pandas=True))
        return arr if back is None else arr.take(back)

    return {"rec_items": lists("item_id", pa.string()), "rec_scores": lists("score", pa.float64()),
            "rec_reasons": lists("reason", pa.string())}


def recs_columns(ranked: pd.DataFrame, member_ids: Sequence[str], top_n: int) -> pd.DataFrame:
    """member_id, rec_items, rec_scores, rec_reasons: each member's top `top_n` as lists in rank order."""
    arrays = recs_arrays(ranked, member_ids, top_n)
    out = pd.DataFrame({MEMBER_ID: pd.array(list(member_ids), dtype="string")})
    for c in RECS_LISTS:
        out[c] = arrays[c].to_pylist()
    return out


# ------------------------------------------------------------------------------------------ answers from a row

def churn_answer(row: pd.Series | dict[str, Any]) -> Churn:
    return Churn(probability=float(row["churn_probability"]), reasons=list(row["churn_reasons"]))


def ltv_answer(row: pd.Series | dict[str, Any]) -> Ltv:
    return Ltv(value=float(row["ltv"]))


def next_purchase_answer(row: pd.Series | dict[str, Any]) -> NextPurchase:
    keys = row.index if isinstance(row, pd.Series) else list(row)
    probs = {d: float(row[f"{PROBABILITY_PREFIX}{d}"]) for d in probability_days(list(keys))}
    date = row.get("next_purchase_date")
    return NextPurchase(probability_within_days=probs, median_days=_num(row.get("median_days")),
                        expected_days=_num(row.get("expected_days")),
                        expected_date=None if date is None or pd.isna(date) else pd.Timestamp(date).date())


def recommendation_answers(ranked: pd.DataFrame, n: int) -> list[Recommendation]:
    """The first `n` ranked rows of one member as response items (ranks renumbered 1..n)."""
    return [Recommendation(rank=i + 1, item_id=str(r.item_id), score=float(r.score), reason=str(r.reason))
            for i, r in enumerate(ranked.head(n).itertuples(index=False))]
