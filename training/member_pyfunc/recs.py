"""The recommendation model as served: numpy scoring (no training matrix, no `implicit`), as an MLflow pyfunc.

The model is a set of arrays (`RecsArtifacts`): item factors and the ALS solver constants, item-item top
neighbours, popularity (global / category / segment), item statistics, and optionally a LightGBM ranker as text.
A member is described by their item history summary (one row per member and item: `member_id, item_id,
n_bought, last_bought_at` and optionally `first_bought_at, n_view, n_cart, n_favorite, last_seen_at, spend`), which
comes from the online feature table (`recent_items`) or from an inline history via `summarise_history`.

Scoring a batch of members:
1. fold the member's weighted history into the ALS item factors (one small least-squares solve per member, the
   same equation `implicit` uses),
2. candidates = the member's own items (repurchase), ALS top items, items often bought with theirs (kNN), and
   popular items (global, or the member's segment: cold start),
3. features per candidate, scored by the ranker (or a repurchase-first blend when no ranker won validation),
4. business rules (`rules.py`), top-N per member, and a short reason each.

Everything is vectorised over the batch, so one member and all members take the same code path (tested: batch equals
single). This module and `recs_rules.py` are all the MLflow model needs at load time (plus lightgbm when a ranker
won validation). For one-member latency the ranker is compiled at load (`tree_predictor.py`: LightGBM's scores, ~3×
less CPU; LightGBM itself when that is unavailable) and small inputs skip pandas' per-column overhead
(`frame_columns.py`); tests/test_recs_latency.py checks both against the reference path. Also built once at load and
exact (tests/test_recs_latency_kernels.py): the ALS top-k is defined exactly (float64 scores in a fixed order, ties
by item index: one member and a batch get the same items) and one member's search scores only the items whose norm
bound can reach it (`als_topk.py`), the candidate features, kNN sums and fold-in rows are numba loops
(`recs_kernels.py`), and Arrow item ids are looked up in a compiled hash table (`item_lookup.py`); numpy/dict paths
remain without numba. A batch of one member then runs arrays end to end (`recs_online.py`: history order, the
candidate union with kNN sums and ranks, rules and top-N in a few compiled passes, reasons for the top rows only, the
output frame built once from its blocks); tests/test_recs_latency_online.py checks it against the batch code for one
member, bit for bit.
"""
from __future__ import annotations

import functools
import json
import logging
from itertools import repeat
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from .als_topk import NormOrder, norm_order, top_k, top_k_rows
from .frame_columns import column_values, datetime_column_us, numeric_column, single_value, string_array
from .recs_rules import RulesConfig, allowed_mask, consumable_flags, reasons, rules_from_params

_log = logging.getLogger(__name__)

HISTORY_REQUIRED: tuple[str, ...] = ("member_id", "item_id", "n_bought", "last_bought_at")
HISTORY_OPTIONAL: dict[str, Any] = {
    "first_bought_at": pd.NaT, "last_seen_at": pd.NaT, "n_view": 0.0, "n_cart": 0.0, "n_favorite": 0.0,
    "spend": np.nan,
    # time-decayed counts measured at the summary's as_of (NaN when unknown: no as_of, no events table, or an online
    # `recent_items` table built before it carried them; features/definitions/recent_items.py serves them all):
    # orders with the item at half-lives of 14 and 56 days, views and carts at a half-life of 1 day
    "n_bought_hl14": np.nan, "n_bought_hl56": np.nan, "n_view_hl1": np.nan, "n_cart_hl1": np.nan,
}
DECAY_COLUMNS: dict[str, tuple[str, float]] = {  # column → (what is counted, half-life in days)
    "n_bought_hl14": ("buy", 14.0), "n_bought_hl56": ("buy", 56.0), "n_view_hl1": ("view", 1.0),
    "n_cart_hl1": ("cart", 1.0)}
OUTPUT_COLUMNS: tuple[str, ...] = ("member_id", "rank", "item_id", "score", "reason")
# Days of history a member summary covers, in training (`summarise_history(window_days=…)`) and in the online
# `recent_items` table (features/definitions/recent_items.py RECENT_ITEMS_DAYS, tested equal): one window for both.
HISTORY_DAYS = 365

FEATURES: tuple[str, ...] = (
    "hist_n_bought", "hist_rep_score", "hist_days_last", "hist_days_first", "hist_mean_gap", "hist_due_ratio",
    "hist_share", "hist_n_view", "hist_n_cart", "hist_n_favorite", "hist_days_seen",
    "item_pop_recent", "item_pop_all", "item_trend", "item_repeat", "item_price_ratio",
    "als_score", "knn_score", "cat_affinity",
    "member_n_items", "member_total", "member_days_last", "hist_rate", "member_tenure",
    "hist_hl14", "hist_hl56", "hist_hl14_share", "hist_view_hl1", "hist_cart_hl1", "item_cycle", "hist_due_item",
    "als_rank", "knn_rank", "member_hl14",
)
SOURCE_HISTORY, SOURCE_KNN, SOURCE_ALS, SOURCE_POP = 0, 1, 2, 3

DEFAULT_PARAMS: dict[str, Any] = {
    "w_buy": 1.0, "w_cart": 0.5, "w_favorite": 0.3, "w_view": 0.1,
    "bm25_k1": 100.0, "bm25_b": 0.8, "avg_len": 1.0, "als_alpha": 1.0, "als_reg": 0.05,
    "n_hist": 200, "n_als": 50, "n_knn": 50, "n_pop": 20, "knn_seeds": 40,
    "als_chunk": 512, "top_n": 10, "rules": {},
}


class HistoryError(ValueError):
    """The member history handed to the model is malformed."""


# --------------------------------------------------------------------------------------------------------------------
# history summaries

def summarise_history(orders: pd.DataFrame, events: pd.DataFrame | None, as_of: object | None = None,
                      window_days: int | None = None) -> pd.DataFrame:
    """Per (member, item) summary of orders (paid lines, net of refunded/cancelled lines) and events before `as_of`.

    `orders` uses contract columns (member_id, order_id, ordered_at, item_id, status, amount); `events` (optional)
    member_id, occurred_at, type, item_id. Rows at or after `as_of` are ignored (point-in-time), rows without an
    item are skipped (they cannot be recommended). `window_days` (needs `as_of`) keeps only rows in
    [as_of − window_days, as_of): the window of the online `recent_items` table (HISTORY_DAYS), so the summary the
    ranker is trained on and the one it is served agree for long-time members too.
    """
    _require(orders, ("member_id", "order_id", "ordered_at", "item_id"), "orders")
    if window_days is not None and as_of is None:
        raise HistoryError("window_days needs an as_of to count back from")
    start = None if window_days is None else pd.Timestamp(as_of) - pd.Timedelta(days=int(window_days))
    o = orders[orders["item_id"].notna()]
    if as_of is not None:
        o = o[o["ordered_at"] < pd.Timestamp(as_of)]
    if start is not None:
        o = o[o["ordered_at"] >= start]
    status = o["status"] if "status" in o.columns else pd.Series("paid", index=o.index)
    status = status.fillna("paid")
    paid = o[status == "paid"]
    undone = o[status != "paid"][["order_id", "item_id"]].drop_duplicates()
    if len(undone):
        key = ["order_id", "item_id"]
        paid = paid.merge(undone.assign(_undone=True), on=key, how="left")
        paid = paid[paid["_undone"].isna()].drop(columns="_undone")
    amount = paid["amount"] if "amount" in paid.columns else pd.Series(np.nan, index=paid.index)
    # integer codes first: grouping on ints is far faster than on strings
    mc, mu = pd.factorize(paid["member_id"].astype("string"))
    ic, iu = pd.factorize(paid["item_id"].astype("string"))
    oc, _ = pd.factorize(paid["order_id"])
    lines = pd.DataFrame({"m": mc, "i": ic, "o": oc, "at": paid["ordered_at"].to_numpy(),
                          "amount": amount.to_numpy(dtype=float, na_value=np.nan)})
    g = lines.groupby(["m", "i"], sort=False)
    distinct = lines.drop_duplicates(["m", "i", "o"])
    t_end = None if as_of is None else np.datetime64(pd.Timestamp(as_of).to_datetime64(), "us")
    decayed = {}
    for col, (what, half_life) in DECAY_COLUMNS.items():
        if what == "buy" and t_end is not None:
            age = (t_end - distinct["at"].to_numpy(dtype="datetime64[us]")) / np.timedelta64(1, "D")
            decayed[col] = distinct.assign(w=np.exp2(-age / half_life)).groupby(["m", "i"], sort=False)["w"].sum()
    bought = pd.DataFrame({
        "n_bought": distinct.groupby(["m", "i"], sort=False).size().astype(float),
        **decayed,
        "first_bought_at": g["at"].min(),
        "last_bought_at": g["at"].max(),
        "spend": g["amount"].sum(min_count=1),
    })
    bought.index = pd.MultiIndex.from_arrays(
        [pd.Index(mu).take(bought.index.get_level_values(0)).astype("string"),
         pd.Index(iu).take(bought.index.get_level_values(1)).astype("string")], names=["member_id", "item_id"])
    if events is not None and len(events):
        _require(events, ("member_id", "occurred_at", "type", "item_id"), "events")
        e = events[events["item_id"].notna() & events["type"].isin(["view", "cart", "favorite"])]
        if as_of is not None:
            e = e[e["occurred_at"] < pd.Timestamp(as_of)]
        if start is not None:
            e = e[e["occurred_at"] >= start]
        e = pd.DataFrame({"member_id": e["member_id"].astype("string"), "item_id": e["item_id"].astype("string"),
                          "type": e["type"].astype("string"), "at": e["occurred_at"]})
        counts = e.pivot_table(index=["member_id", "item_id"], columns="type", values="at", aggfunc="count",
                               fill_value=0)
        counts = counts.reindex(columns=["view", "cart", "favorite"], fill_value=0).astype(float)
        counts.columns = ["n_view", "n_cart", "n_favorite"]
        counts["last_event_at"] = e.groupby(["member_id", "item_id"])["at"].max()
        if t_end is not None:
            age = (t_end - e["at"].to_numpy(dtype="datetime64[us]")) / np.timedelta64(1, "D")
            for col, (what, half_life) in DECAY_COLUMNS.items():
                if what != "buy":
                    w = np.where(e["type"].to_numpy(dtype=object) == what, np.exp2(-age / half_life), 0.0)
                    counts[col] = e.assign(w=w).groupby(["member_id", "item_id"])["w"].sum()
        out = bought.join(counts, how="outer")
    else:
        out = bought.assign(n_view=0.0, n_cart=0.0, n_favorite=0.0, last_event_at=pd.NaT)
    out["n_bought"] = out["n_bought"].fillna(0.0)
    for c in ("n_view", "n_cart", "n_favorite"):
        out[c] = out[c].fillna(0.0)
    for c in DECAY_COLUMNS:
        out[c] = out[c].fillna(0.0) if (c in out.columns and t_end is not None) else np.nan
    out["last_seen_at"] = out[["last_bought_at", "last_event_at"]].max(axis=1)
    out = out.drop(columns="last_event_at").reset_index()
    return out[list(HISTORY_REQUIRED) + list(HISTORY_OPTIONAL)]


def _require(df: pd.DataFrame, cols: tuple[str, ...], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise HistoryError(f"{what} is missing column(s) {missing}; it has {list(df.columns)}")


# --------------------------------------------------------------------------------------------------------------------
# artifacts

_ARRAYS = ("item_ids", "item_category", "categories", "item_price", "item_pop_recent", "item_pop_prev",
           "item_pop_all", "item_repeat", "item_consumable", "item_factors", "item_idf", "nbr_idx", "nbr_sim",
           "pop_global", "pop_category", "segments", "pop_segment", "item_cycle")


@dataclass
class RecsArtifacts:
    """Everything the serving model needs, as numpy arrays plus a JSON-able params dict and the ranker text."""

    item_ids: np.ndarray  # (n,) str
    item_category: np.ndarray  # (n,) int32, -1 unknown
    categories: np.ndarray  # (c,) str
    item_price: np.ndarray  # (n,) float32: median paid line amount, NaN unknown
    item_pop_recent: np.ndarray  # (n,) float32: buyers in the last popularity window
    item_pop_prev: np.ndarray  # (n,) float32: buyers in the window before
    item_pop_all: np.ndarray  # (n,) float32: buyers over the whole training history
    item_repeat: np.ndarray  # (n,) float32: share of buyers who bought it again (smoothed)
    item_consumable: np.ndarray  # (n,) int8: 1 consumable, 0 not, -1 unknown
    item_factors: np.ndarray  # (n, f) float32: ALS item factors
    item_idf: np.ndarray  # (n,) float32: BM25 idf of each item
    nbr_idx: np.ndarray  # (n, K) int32: item-item top neighbours, -1 padding
    nbr_sim: np.ndarray  # (n, K) float32
    pop_global: np.ndarray  # (P,) int32
    pop_category: np.ndarray  # (c, P) int32, -1 padding
    segments: np.ndarray  # (s,) str
    pop_segment: np.ndarray  # (s, P) int32, -1 padding
    item_cycle: np.ndarray | None = None  # (n,) float32: typical days between a member's purchases, NaN unknown
    params: dict[str, Any] = field(default_factory=dict)
    ranker: str | None = None  # LightGBM model text, or None: the repurchase-first blend

    def save(self, path: str | Path) -> Path:
        """Write arrays.npz, params.json and (if any) ranker.txt into folder `path`."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays = {k: getattr(self, k) for k in _ARRAYS if getattr(self, k) is not None}
        arrays = {k: (v.astype(str) if v.dtype == object else v) for k, v in arrays.items()}
        np.savez(path / "arrays.npz", **arrays)
        (path / "params.json").write_text(json.dumps(self.params, indent=2, default=str), encoding="utf-8")
        if self.ranker is not None:
            (path / "ranker.txt").write_text(self.ranker, encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "RecsArtifacts":
        path = Path(path)
        with np.load(path / "arrays.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in _ARRAYS if k in z.files}
        params = json.loads((path / "params.json").read_text(encoding="utf-8"))
        ranker_path = path / "ranker.txt"
        ranker = ranker_path.read_text(encoding="utf-8") if ranker_path.exists() else None
        return cls(**arrays, params=params, ranker=ranker)

    # derived, computed once per loaded model
    @cached_property
    def p(self) -> dict[str, Any]:
        return {**DEFAULT_PARAMS, **self.params}

    @cached_property
    def item_index(self) -> pd.Index:
        return pd.Index(self.item_ids.astype(object), dtype=object)  # object hashtable: fast small lookups

    @cached_property
    def item_pos(self) -> dict[str, int]:
        return {x: k for k, x in enumerate(self.item_ids.tolist())}

    @cached_property
    def item_table(self) -> Any:
        """The item ids hashed for the compiled one-member id lookup (`item_lookup.py`), or None (no numba)."""
        from .item_lookup import item_table

        return item_table(self.item_ids)

    @cached_property
    def blas(self) -> Any:
        """A threadpoolctl controller (built once: building one scans the loaded libraries), or None."""
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - serving images without threadpoolctl
            return None
        return ThreadpoolController()

    @cached_property
    def als_order(self) -> NormOrder:
        """Item factors sorted by norm, for the one-member pruned ALS top-k (`als_topk.py`)."""
        return norm_order(self.item_factors)

    @cached_property
    def item_columns(self) -> Any:
        """Per-item log popularity and trend, once per model, for the compiled feature loops."""
        from .recs_kernels import item_columns

        return item_columns(self.item_pop_recent, self.item_pop_prev, self.item_pop_all)

    @cached_property
    def feature_kernel(self) -> bool:
        """True when the compiled loops of `recs_kernels.py` run (candidate features, kNN sums, the one-member
        fold-in rows; numba compiles them here, once), False: numpy, the same numbers (numba missing, or a feature
        list the loops do not write; logged)."""
        from .recs_kernels import KERNEL_FEATURES, kernels_available

        if KERNEL_FEATURES != FEATURES:
            _log.warning("recs model: compiled feature loops skipped (feature list differs); features by numpy")
            return False
        if not kernels_available(item_factors=self.item_factors, item_category=self.item_category,
                                 items=self.item_columns, item_repeat=self.item_repeat, item_price=self.item_price,
                                 item_cycle=self.item_cycle):
            _log.warning("recs model: numba unavailable or failed to compile; numpy loops")
            return False
        return True

    @cached_property
    def online_kernel(self) -> bool:
        """True when one member's candidates and top-N take the compiled one-member loops (`recs_online.py`, on
        top of the feature loops); False: the batch code for one member too (the same answers)."""
        if not self.feature_kernel:
            return False
        from .recs_online import available

        if not available():
            _log.warning("recs model: one-member loops failed to compile; the batch code serves one member")
            return False
        return True

    @cached_property
    def static_allowed(self) -> np.ndarray:
        """Per item: passes the rules that do not depend on the member (categories, item lists), once per model."""
        n = self.n_items
        return allowed_mask(np.arange(n), np.full(n, np.nan), item_ids=self.item_ids,
                            item_category=self.item_category, categories=self.categories,
                            consumable=np.ones(n, bool), rules=self.rules)

    @cached_property
    def yty(self) -> np.ndarray:
        v = self.item_factors.astype(np.float64)
        return v.T @ v

    @cached_property
    def als_base(self) -> np.ndarray:
        """YᵀY + λI: the part of every member's fold-in equation that does not depend on the member."""
        f = self.item_factors.shape[1]
        return self.yty + self.p["als_reg"] * np.eye(f)

    @cached_property
    def rules(self) -> RulesConfig:
        return rules_from_params(self.p.get("rules"))

    @cached_property
    def consumable(self) -> np.ndarray:
        return consumable_flags(self.item_consumable, self.item_repeat, self.rules)

    @cached_property
    def booster(self) -> Any:
        if self.ranker is None:
            return None
        import lightgbm

        return lightgbm.Booster(model_str=self.ranker)

    @cached_property
    def ranker_columns(self) -> np.ndarray | None:
        """Columns of the candidate matrix (`FEATURES`) the ranker reads, in the order it was trained with (from the
        feature names stored in the model, so models trained on another feature list keep working); None when they
        are all of `FEATURES` in order."""
        if self.booster is None:
            return None
        names = self.booster.feature_name()
        unknown = [f for f in names if f not in FEATURES]
        if unknown:
            raise ValueError(f"the ranker uses feature(s) {unknown} that this scorer does not compute")
        if tuple(names) == FEATURES:
            return None
        return np.array([FEATURES.index(f) for f in names], dtype=np.int64)

    @cached_property
    def predictor(self) -> Any:
        """The ranker compiled once at load (`tree_predictor`: LightGBM's scores, ~3× less CPU), or None: then
        LightGBM scores (no ranker, or a model/machine the compiled predictor does not cover; logged)."""
        if self.ranker is None:
            return None
        from .tree_predictor import compile_forest

        predictor, note = compile_forest(self.ranker, FEATURES)
        (_log.info if predictor is not None else _log.warning)("recs model: %s", note)
        return predictor

    def __post_init__(self) -> None:
        if self.item_cycle is None:  # models saved before the item cycle existed
            self.item_cycle = np.full(len(self.item_ids), np.nan, np.float32)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)


# --------------------------------------------------------------------------------------------------------------------
# history → arrays

@dataclass
class HistoryBatch:
    """A batch of members and their known-item histories as flat arrays sorted by (member, item)."""

    member_ids: np.ndarray  # (b,) member ids in first-appearance order
    segment: np.ndarray  # (b,) int32 index into artifacts.segments, -1 none
    m: np.ndarray  # (h,) member position
    i: np.ndarray  # (h,) item index
    n_bought: np.ndarray
    days_last: np.ndarray
    days_first: np.ndarray
    days_seen: np.ndarray
    n_view: np.ndarray
    n_cart: np.ndarray
    n_favorite: np.ndarray
    spend: np.ndarray
    hl14: np.ndarray
    hl56: np.ndarray
    view_hl1: np.ndarray
    cart_hl1: np.ndarray

    @property
    def b(self) -> int:
        return len(self.member_ids)


def _n_rows(keep: np.ndarray) -> int:
    """How many rows `keep` selects (a boolean mask or the positions themselves)."""
    return int(keep.sum()) if keep.dtype == bool else len(keep)


def _single_member(art: RecsArtifacts, values: Any) -> tuple[bool, Any]:
    """`single_value` of the member ids, by one compiled pass over Arrow strings when it can (`recs_online`)."""
    if art.online_kernel:
        from .recs_online import arrow_single_value

        fast = arrow_single_value(values)
        if fast is not None:
            return fast
    return single_value(values)


def _num(h: pd.DataFrame, name: str, keep: np.ndarray, default: float) -> np.ndarray:
    """A numeric input column as float64 (missing column → default; unparseable values are an error); `keep`
    selects rows (a boolean mask or positions)."""
    if name not in h.columns:
        return np.full(_n_rows(keep), default)
    fast = numeric_column(h, name, default)  # plain numpy columns without building a Series (same numbers)
    if fast is not None:
        return fast[keep]
    try:
        return h[name].to_numpy(dtype=float, na_value=default)[keep]
    except (TypeError, ValueError) as e:
        raise HistoryError(f"column {name!r} must be numeric: {e}") from None


def _age_days(h: pd.DataFrame, name: str, keep: np.ndarray, as_of: np.datetime64) -> np.ndarray:
    """Days from a timestamp column to `as_of` (NaT or missing column → NaN)."""
    if name not in h.columns:
        return np.full(_n_rows(keep), np.nan)
    fast = datetime_column_us(h, name)  # tz-naive numpy datetimes without building a Series (same numbers)
    if fast is not None:
        return (as_of - fast[keep]) / np.timedelta64(1, "D")
    s = h[name]
    try:
        arr = s.to_numpy(dtype="datetime64[us]") if pd.api.types.is_datetime64_any_dtype(s) else \
            pd.to_datetime(s).to_numpy(dtype="datetime64[us]")
    except (TypeError, ValueError) as e:
        raise HistoryError(f"column {name!r} must hold timestamps: {e}") from None
    return (as_of - arr[keep]) / np.timedelta64(1, "D")


SMALL_INPUT = 4096  # rows: below this the online path uses dict lookups instead of pandas indexers


def _first_seen(values: np.ndarray) -> np.ndarray:
    """Distinct values in first-appearance order (small arrays)."""
    return np.array(list(dict.fromkeys(values.tolist())), dtype=object).astype(str)


def prepare_history(history: pd.DataFrame, art: RecsArtifacts, as_of: object) -> HistoryBatch:
    """Validate a history summary and turn it into arrays. A member given only by a row with a null item_id is kept
    (cold start); rows about items the model does not know are ignored. Plain numpy on columns (no per-row work,
    little pandas overhead: this is the one-member online path too)."""
    if "member_id" not in history.columns:
        raise HistoryError(f"model input needs a member_id column; it has {list(history.columns)}")
    # one member (the online request): no per-row member ids to convert, hash or look up
    one, the_member = (False, None) if "segment" in history.columns or len(history) > SMALL_INPUT else \
        _single_member(art, column_values(history, "member_id"))
    mid = history["member_id"].to_numpy(dtype=object) if not one else None
    if not one and pd.isna(mid).any():
        raise HistoryError(f"member_id is null in {int(pd.isna(mid).sum())} input row(s)")
    h = history
    for c in ("n_bought", "last_bought_at"):
        if c not in h.columns and "item_id" in h.columns and h["item_id"].notna().any():
            raise HistoryError(f"history rows need column {c!r}")
    as_of64 = np.datetime64(pd.Timestamp(as_of).to_datetime64(), "us")
    small = len(h) <= SMALL_INPUT
    if one:
        members = np.array([the_member], dtype=object).astype(str)
    else:
        mid = mid.astype(str)
        members = _first_seen(mid) if small else pd.unique(mid)
    seg = np.full(len(members), -1, dtype=np.int32)
    if "segment" in h.columns and len(art.segments):
        sv = h["segment"].to_numpy(dtype=object)
        first = np.unique(mid, return_index=True)[1]
        s = pd.Index(art.segments).get_indexer(pd.Series(sv[first]).fillna("").astype(str))
        seg = pd.Series(s, index=mid[first]).reindex(members).to_numpy(np.int32)
    if len(members) == 1:
        mpos = np.zeros(len(h), np.int64)
    elif len(members) == len(mid) and (members == mid).all():
        mpos = np.arange(len(members))
    elif small:
        where = {m: k for k, m in enumerate(members)}
        mpos = np.fromiter((where[m] for m in mid), np.int64, len(mid))
    else:
        mpos = pd.Index(members, dtype=object).get_indexer(mid)
    if "item_id" in h.columns:
        # small inputs: Arrow strings through the compiled hash table (`item_lookup.py`), else a dict lookup per
        # row (both beat building a pandas indexer for a handful of rows; the same positions, tested)
        table = art.item_table if small else None
        ipos = table.positions(column_values(h, "item_id")) if table is not None else None
        if ipos is None:
            items = h["item_id"].to_numpy(dtype=object)
            if small:
                pos = art.item_pos
                ipos = np.fromiter(map(pos.get, items.tolist(), repeat(-1, len(items))), np.int64, len(items))
            else:
                ipos = art.item_index.get_indexer(
                    np.where(pd.isna(items), "\x00", items).astype(str).astype(object))
    else:
        ipos = np.full(len(h), -1)
    keep = ipos >= 0
    presorted = len(members) == 1 and small
    if presorted:  # one member: the rows to keep, in item order (the sort below, done first on the positions)
        kept = np.flatnonzero(keep)
        keep = kept[np.argsort(ipos[kept], kind="stable")]
    nb = _num(h, "n_bought", keep, 0.0)
    if (nb < 0).any():
        raise HistoryError("n_bought must be ≥ 0")
    days_last = _age_days(h, "last_bought_at", keep, as_of64)
    if len(days_last) and np.nanmin(np.append(days_last, np.inf)) < 0:
        raise HistoryError(f"history has purchases after as_of {pd.Timestamp(as_of)} (point-in-time violation)")
    days_seen = _age_days(h, "last_seen_at", keep, as_of64)
    arrays = {
        "m": mpos[keep].astype(np.int64), "i": ipos[keep].astype(np.int64), "n_bought": nb,
        "days_last": days_last, "days_first": _age_days(h, "first_bought_at", keep, as_of64),
        "days_seen": np.where(np.isnan(days_seen), days_last, days_seen),
        "n_view": _num(h, "n_view", keep, 0.0), "n_cart": _num(h, "n_cart", keep, 0.0),
        "n_favorite": _num(h, "n_favorite", keep, 0.0), "spend": _num(h, "spend", keep, np.nan),
        "hl14": _num(h, "n_bought_hl14", keep, np.nan), "hl56": _num(h, "n_bought_hl56", keep, np.nan),
        "view_hl1": _num(h, "n_view_hl1", keep, np.nan), "cart_hl1": _num(h, "n_cart_hl1", keep, np.nan),
    }
    key = arrays["m"] * art.n_items + arrays["i"]
    if not presorted:
        order = np.argsort(key, kind="stable")
        arrays = {k: v[order] for k, v in arrays.items()}
        key = key[order]
    if len(key) and (np.diff(key) == 0).any():
        raise HistoryError("history has duplicate (member_id, item_id) rows; summarise them first")
    return HistoryBatch(member_ids=members, segment=seg, **arrays)


# --------------------------------------------------------------------------------------------------------------------
# weighting and ALS fold-in (shared with training so the matrix and the serving fold-in agree)

def strength(n_bought: np.ndarray, n_cart: np.ndarray, n_favorite: np.ndarray, n_view: np.ndarray,
             p: dict[str, Any]) -> np.ndarray:
    """Interaction strength: buys count most, carts/favourites/views are weaker signals; log-scaled."""
    s = p["w_buy"] * n_bought + p["w_cart"] * n_cart + p["w_favorite"] * n_favorite + p["w_view"] * n_view
    return np.log1p(s)


def bm25_confidence(s: np.ndarray, member: np.ndarray, item: np.ndarray, n_members: int, idf: np.ndarray,
                    p: dict[str, Any]) -> np.ndarray:
    """BM25-weighted confidence (member rows are documents): saturates heavy repeats, down-weights common items."""
    row_len = np.bincount(member, weights=s, minlength=n_members)
    norm = (1.0 - p["bm25_b"]) + p["bm25_b"] * row_len[member] / max(float(p["avg_len"]), 1e-9)
    k1 = p["bm25_k1"]
    return p["als_alpha"] * s * (k1 + 1.0) / (k1 * norm + s) * idf[item]


def fold_in(art: RecsArtifacts, hb: HistoryBatch) -> np.ndarray:
    """Member factors from their history: x = (YᵀY + Yᵀ(C−I)Y + λI)⁻¹ YᵀC·1, as `implicit` solves them."""
    p = art.p
    f = art.item_factors.shape[1]
    out = np.zeros((hb.b, f), dtype=np.float64)
    if len(hb.i) == 0:
        return out.astype(np.float32)
    s = strength(hb.n_bought, hb.n_cart, hb.n_favorite, hb.n_view, p)
    c = bm25_confidence(s, hb.m, hb.i, hb.b, art.item_idf, p)
    pos = c > 0
    m, i, c = hb.m[pos], hb.i[pos], c[pos]
    if len(m) == 0:
        return out.astype(np.float32)
    return _solve_batched(art, m, i, c, out).astype(np.float32)


def _solve_batched(art: RecsArtifacts, m: np.ndarray, i: np.ndarray, c: np.ndarray, out: np.ndarray,
                   budget: int = 1 << 21, *, compiled: bool = True) -> np.ndarray:
    """All members' normal equations as stacked matrices, solved by LAPACK in one call per chunk (no Python loop
    per member). Members are grouped by history length so the padded (members, length, factors) blocks stay dense;
    rows of `m` must be sorted by member."""
    f = art.item_factors.shape[1]
    base = art.als_base
    if m[0] == m[-1]:  # one member (the online path): the same block and arithmetic, without the chunk bookkeeping
        w = c.astype(np.float64)[None]
        if compiled and art.feature_kernel:  # the factor rows and their scaled copy in one compiled pass
            from .recs_kernels import factor_rows

            y2, z2 = factor_rows(art.item_factors, i, w[0])
            y, lhs = y2[None], z2.T[None]  # lhs: numpy's `y.transpose(0, 2, 1) * (w - 1)`, same layout
        else:
            y = art.item_factors[i].astype(np.float64)[None]
            lhs = y.transpose(0, 2, 1) * (w - 1.0)[:, None, :]
        a = base + np.matmul(lhs, y)
        rhs = np.einsum("blf,bl->bf", y, w)
        out[m[:1]] = np.linalg.solve(a, rhs[..., None])[..., 0]
        return out
    starts = np.r_[0, np.flatnonzero(np.diff(m)) + 1]
    lengths = np.diff(np.r_[starts, len(m)])
    by_len = np.argsort(lengths, kind="stable")
    sorted_len = lengths[by_len]
    k = 0
    while k < len(by_len):  # one pass per chunk, not per member
        # as many members as fit the budget at the length of the longest (last) one in the chunk
        cost = (np.arange(1, len(by_len) - k + 1) * sorted_len[k:]) * f
        stop = k + max(int(np.searchsorted(cost, budget, side="right")), 1)
        grp = by_len[k:stop]
        k = stop
        ln = lengths[grp]
        width = int(ln.max())
        rows = np.repeat(starts[grp], ln) + (np.arange(ln.sum()) - np.repeat(np.cumsum(ln) - ln, ln))
        slot = np.repeat(np.arange(len(grp)), ln)
        col = rows - np.repeat(starts[grp], ln)
        y = np.zeros((len(grp), width, f))
        w = np.zeros((len(grp), width))
        y[slot, col] = art.item_factors[i[rows]]
        w[slot, col] = c[rows]
        a = base + np.matmul(y.transpose(0, 2, 1) * (w - 1.0)[:, None, :], y)
        rhs = np.einsum("blf,bl->bf", y, w)
        out[m[starts[grp]]] = np.linalg.solve(a, rhs[..., None])[..., 0]
    return out


# --------------------------------------------------------------------------------------------------------------------
# candidates and features

def group_rank(group: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, rank): order sorts by group then score descending; rank is the 0-based position within the group."""
    if len(group) and group[0] == group[-1] and (group == group[0]).all():
        # one group (one member: the online path): the same stable order from a one-key sort, ~3× cheaper
        return np.argsort(-score, kind="stable"), np.arange(len(group))
    order = np.lexsort((-score, group))
    g = group[order]
    if len(g) == 0:
        return order, np.zeros(0, dtype=np.int64)
    starts = np.r_[0, np.flatnonzero(np.diff(g)) + 1]
    lengths = np.diff(np.r_[starts, len(g)])
    rank = np.arange(len(g)) - np.repeat(starts, lengths)
    return order, rank


def repurchase_score(hb: HistoryBatch) -> np.ndarray:
    """The member's own frequency (orders with the item), then views/carts/favourites, then recency as tie-break."""
    recency = 1.0 / (1.0 + np.nan_to_num(hb.days_seen, nan=1e6))
    return hb.n_bought + 0.1 * hb.n_cart + 0.05 * hb.n_favorite + 0.01 * np.minimum(hb.n_view, 10) + 1e-3 * recency


@dataclass
class Candidates:
    """The union of candidates for a batch, with features (rows sorted by member, item)."""

    m: np.ndarray
    i: np.ndarray
    source: np.ndarray
    seed: np.ndarray  # kNN seed item index (the history item contributing most), -1 none
    X: np.ndarray  # (rows, len(FEATURES)) float32


def build_candidates(art: RecsArtifacts, hb: HistoryBatch, *, online: bool = True) -> Candidates:
    """Union of history, ALS, kNN and popularity candidates for every member of the batch, with ranker features.

    One member (`online`): the compiled one-member loops (`_candidates_one`), the same candidates and features."""
    if online and hb.b == 1 and art.online_kernel:
        cand = _candidates_one(art, hb)
        if cand is not None:
            return cand
    p = art.p
    n = art.n_items
    b = hb.b
    rep = repurchase_score(hb)
    # history candidates (capped per member)
    order, rank = group_rank(hb.m, rep)
    sel_h = order[rank < p["n_hist"]]
    keys = [hb.m[sel_h] * n + hb.i[sel_h]]
    srcs = [np.full(len(sel_h), SOURCE_HISTORY, np.int8)]
    # ALS: member factors, top items per member
    u = fold_in(art, hb)
    has_hist = np.bincount(hb.m, minlength=b) > 0
    n_als = int(p["n_als"])
    if n_als > 0 and has_hist.any():
        rows = np.flatnonzero(has_hist)
        chunk = int(p["als_chunk"])
        for s0 in range(0, len(rows), chunk):
            r = rows[s0:s0 + chunk]
            k = min(n_als, n - 1)
            # the exact top k (als_topk.py); one member: only the items whose norm bound can reach it are scored
            top = top_k(art.als_order, u[r[0]], k)[None] if len(r) == 1 else \
                top_k_rows(art.als_order, art.item_factors, u[r], k)
            keys.append((r[:, None] * n + top).ravel())
            srcs.append(np.full(top.size, SOURCE_ALS, np.int8))
    # kNN: neighbours of the member's strongest items
    seeds = order[rank < p["knn_seeds"]]
    knn_key = np.zeros(0, np.int64)
    knn_score = np.zeros(0)
    knn_seed = np.zeros(0, np.int64)
    if len(seeds) and art.nbr_idx.shape[1]:
        nb_i = art.nbr_idx[hb.i[seeds]]  # (s, K)
        nb_s = art.nbr_sim[hb.i[seeds]]
        w = np.log1p(rep[seeds])[:, None] * nb_s
        valid = nb_i >= 0
        km = np.repeat(hb.m[seeds], nb_i.shape[1]).reshape(nb_i.shape)[valid]
        kk = km * n + nb_i[valid]
        kw = w[valid]
        ks = np.repeat(hb.i[seeds], nb_i.shape[1]).reshape(nb_i.shape)[valid]
        uk, knn_score, knn_seed = _knn_sums(art, kk, kw, ks)
        knn_key = uk
        o3, r3 = group_rank(uk // n, knn_score)
        top = o3[r3 < p["n_knn"]]
        keys.append(uk[top])
        srcs.append(np.full(len(top), SOURCE_KNN, np.int8))
    # popularity: the member's segment list, else global
    n_pop = int(p["n_pop"])
    if n_pop > 0:
        glob = art.pop_global[:n_pop]
        lists = np.broadcast_to(glob, (b, len(glob))).copy()
        segd = hb.segment >= 0
        if segd.any() and art.pop_segment.size:
            seg_lists = art.pop_segment[hb.segment[segd], :len(glob)]
            lists[segd] = np.where(seg_lists >= 0, seg_lists, lists[segd])
        keys.append((np.arange(b)[:, None] * n + lists).ravel())
        srcs.append(np.full(lists.size, SOURCE_POP, np.int8))
    all_keys = np.concatenate(keys)
    all_src = np.concatenate(srcs)
    # union: keep the strongest source (lowest code) per key
    o = np.lexsort((all_src, all_keys))
    all_keys, all_src = all_keys[o], all_src[o]
    first = np.r_[True, np.diff(all_keys) != 0] if len(all_keys) else np.zeros(0, bool)  # no members: none
    ck, cs = all_keys[first], all_src[first]
    cm, ci = ck // n, ck % n
    return Candidates(m=cm, i=ci, source=cs, seed=_lookup(knn_key, knn_seed, ck, -1).astype(np.int64),
                      X=_features(art, hb, u, rep, ck, cm, ci, knn_key, knn_score))


def _als_top(art: RecsArtifacts, u: np.ndarray, k: int) -> np.ndarray:
    """One member's top-k ALS items (`als_topk.py`: the batch path's items by definition, norm-pruned)."""
    return top_k(art.als_order, u[0], k)


def _candidates_one(art: RecsArtifacts, hb: HistoryBatch) -> Candidates | None:
    """`build_candidates` for a batch of one member by the one-member loops (`recs_online.py`); None when an input
    is outside what the loops reproduce exactly (NaN scores): the caller runs the batch code."""
    from . import recs_kernels, recs_online

    p = art.p
    n = art.n_items
    ho = recs_online.history_order(hb.n_bought, hb.n_cart, hb.n_favorite, hb.n_view, hb.days_seen)
    if ho is None:
        return None
    rep, order = ho
    u = fold_in(art, hb)
    n_als = int(p["n_als"])
    als_top = _als_top(art, u, min(n_als, n - 1)) if (n_als > 0 and len(hb.i)) else np.zeros(0, np.int64)
    n_pop = int(p["n_pop"])
    pop = art.pop_global[:max(n_pop, 0)]
    if n_pop > 0 and hb.segment[0] >= 0 and art.pop_segment.size:
        seg_list = art.pop_segment[hb.segment[0], :len(pop)]
        pop = np.where(seg_list >= 0, seg_list, pop)
    seeds = order[:_count_below(len(order), p["knn_seeds"])]
    out = recs_online.candidates(
        hi=hb.i, order=order, n_hist=_count_below(len(order), p["n_hist"]), seed_w=np.log1p(rep[seeds]),
        nbr_idx=art.nbr_idx, nbr_sim=art.nbr_sim, n_knn=_count_below(n, p["n_knn"]), als_top=als_top, pop=pop)
    if out is None:
        return None
    ck, cs, seed, knn = out
    cm, ci = ck // n, ck % n
    als = np.einsum("ij,ij->i", u[cm], art.item_factors[ci])
    rk = recs_online.ranks(als, knn)
    if rk is None:
        return None
    X = recs_kernels.features(
        b=1, n_cat=max(len(art.categories), 1), hkey=hb.m * n + hb.i, hm=hb.m, hi=hb.i, n_bought=hb.n_bought,
        rep=rep, days_last=hb.days_last, days_first=hb.days_first, days_seen=hb.days_seen, n_view=hb.n_view,
        n_cart=hb.n_cart, n_favorite=hb.n_favorite, spend=hb.spend, hl14=hb.hl14, hl56=hb.hl56,
        view_hl1=hb.view_hl1, cart_hl1=hb.cart_hl1, item_category=art.item_category, items=art.item_columns,
        item_repeat=art.item_repeat, item_price=art.item_price, item_cycle=art.item_cycle, ck=ck, cm=cm, ci=ci,
        als=als, knn=knn, als_rank=rk[0], knn_rank=rk[1])
    return Candidates(m=cm, i=ci, source=cs, seed=seed, X=X)


def _count_below(n: int, limit: float) -> int:
    """How many of the ranks 0..n−1 are below `limit` (the batch path's `rank < limit`)."""
    return int(min(n, max(0, np.ceil(limit))))


def _knn_sums(art: RecsArtifacts, kk: np.ndarray, kw: np.ndarray, ks: np.ndarray, *,
              compiled: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (member, item) keys of the kNN contributions, their summed weight, and the seed item contributing
    most to each (for the reason): one compiled pass (`recs_kernels.knn_sums`) or numpy, the same arrays."""
    if compiled and art.feature_kernel:
        from .recs_kernels import knn_sums

        return knn_sums(kk, kw, ks)
    uk, inv = np.unique(kk, return_inverse=True)
    knn_score = np.bincount(inv, weights=kw, minlength=len(uk))
    o2, r2 = group_rank(inv, kw)
    knn_seed = np.empty(len(uk), np.int64)
    knn_seed[inv[o2[r2 == 0]]] = ks[o2[r2 == 0]]
    return uk, knn_score, knn_seed


def _lookup(sorted_keys: np.ndarray, values: np.ndarray, query: np.ndarray, default: float) -> np.ndarray:
    """values[k] for each query key found in sorted_keys, else `default`."""
    if len(sorted_keys) == 0:
        return np.full(len(query), default, dtype=float if isinstance(default, float) else np.int64)
    pos = np.searchsorted(sorted_keys, query)
    pos = np.minimum(pos, len(sorted_keys) - 1)
    found = sorted_keys[pos] == query
    out = np.where(found, values[pos], default)
    return out


def _group_reduce(op: np.ufunc, m: np.ndarray, starts: np.ndarray, values: np.ndarray, b: int,
                  init: float) -> np.ndarray:
    """Per member `op` (np.maximum / np.minimum) of `values` starting from `init`, for rows sorted by member `m`
    (`starts`: first row of each member present): the same numbers as `op.at`, with one reduceat instead."""
    out = np.full(b, init)
    if len(starts):
        out[m[starts]] = op(op.reduceat(values, starts), init)
    return out


def _scores_and_ranks(art: RecsArtifacts, u: np.ndarray, ck: np.ndarray, cm: np.ndarray, ci: np.ndarray,
                      knn_key: np.ndarray, knn_score: np.ndarray) -> tuple[np.ndarray, ...]:
    """ALS and kNN score of each candidate and their rank within the member's candidates (kNN rank NaN when 0)."""
    als = np.einsum("ij,ij->i", u[cm], art.item_factors[ci])
    knn = _lookup(knn_key, knn_score, ck, 0.0)
    o_a, r_a = group_rank(cm, als)
    als_rank = np.empty(len(ck))
    als_rank[o_a] = r_a
    o_k, r_k = group_rank(cm, knn)
    knn_rank = np.empty(len(ck))
    knn_rank[o_k] = np.where(knn[o_k] > 0, r_k, np.nan)
    return als, knn, als_rank, knn_rank


def _features(art: RecsArtifacts, hb: HistoryBatch, u: np.ndarray, rep: np.ndarray, ck: np.ndarray,
              cm: np.ndarray, ci: np.ndarray, knn_key: np.ndarray, knn_score: np.ndarray, *,
              compiled: bool = True) -> np.ndarray:
    """The (candidates, FEATURES) float32 matrix: by the compiled loops (`recs_kernels.py`) when numba is there,
    else by numpy (`_features_numpy`): the same numbers (tested)."""
    if not (compiled and art.feature_kernel):
        return _features_numpy(art, hb, u, rep, ck, cm, ci, knn_key, knn_score)
    from . import recs_kernels

    als, knn, als_rank, knn_rank = _scores_and_ranks(art, u, ck, cm, ci, knn_key, knn_score)
    return recs_kernels.features(
        b=hb.b, n_cat=max(len(art.categories), 1), hkey=hb.m * art.n_items + hb.i, hm=hb.m, hi=hb.i,
        n_bought=hb.n_bought, rep=rep, days_last=hb.days_last, days_first=hb.days_first, days_seen=hb.days_seen,
        n_view=hb.n_view, n_cart=hb.n_cart, n_favorite=hb.n_favorite, spend=hb.spend, hl14=hb.hl14, hl56=hb.hl56,
        view_hl1=hb.view_hl1, cart_hl1=hb.cart_hl1, item_category=art.item_category, items=art.item_columns,
        item_repeat=art.item_repeat, item_price=art.item_price, item_cycle=art.item_cycle, ck=ck, cm=cm, ci=ci,
        als=als, knn=knn, als_rank=als_rank, knn_rank=knn_rank)


def _features_numpy(art: RecsArtifacts, hb: HistoryBatch, u: np.ndarray, rep: np.ndarray, ck: np.ndarray,
                    cm: np.ndarray, ci: np.ndarray, knn_key: np.ndarray, knn_score: np.ndarray) -> np.ndarray:
    """The feature matrix by numpy array operations (the reference the compiled loops are tested against)."""
    n = art.n_items
    b = hb.b
    hkey = hb.m * n + hb.i  # sorted
    pos = np.searchsorted(hkey, ck)
    pos_c = np.minimum(pos, max(len(hkey) - 1, 0))
    in_h = (len(hkey) > 0) & (hkey[pos_c] == ck) if len(hkey) else np.zeros(len(ck), bool)

    def hget(arr: np.ndarray, default: float = np.nan) -> np.ndarray:
        if len(hkey) == 0:
            return np.full(len(ck), default)
        return np.where(in_h, arr[pos_c], default)

    nb = hget(hb.n_bought, 0.0)
    days_last = hget(hb.days_last)
    days_first = hget(hb.days_first)
    gap = np.where(nb >= 2, (days_first - days_last) / np.maximum(nb - 1, 1), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        due = days_last / gap
    # member level
    m_total = np.bincount(hb.m, weights=hb.n_bought, minlength=b)
    m_items = np.bincount(hb.m, weights=(hb.n_bought > 0).astype(float), minlength=b)
    starts = np.r_[0, np.flatnonzero(np.diff(hb.m)) + 1] if len(hb.m) else np.zeros(0, np.int64)
    m_max = _group_reduce(np.maximum, hb.m, starts, hb.n_bought, b, 0.0)
    tmp = _group_reduce(np.minimum, hb.m, starts, np.nan_to_num(hb.days_last, nan=np.inf), b, np.inf)
    m_days_last = np.where(np.isfinite(tmp), tmp, np.nan)
    m_tenure = _group_reduce(np.maximum, hb.m, starts, np.nan_to_num(hb.days_first, nan=0.0), b, 0.0)
    spend_known = ~np.isnan(hb.spend)
    m_spend = np.bincount(hb.m[spend_known], weights=hb.spend[spend_known], minlength=b)
    m_lines = np.bincount(hb.m[spend_known], weights=hb.n_bought[spend_known], minlength=b)
    m_line_value = np.where(m_lines > 0, m_spend / np.maximum(m_lines, 1e-9), np.nan)
    # category affinity
    n_cat = max(len(art.categories), 1)
    hcat = art.item_category[hb.i]
    kc = hcat >= 0
    cat_counts = np.bincount(hb.m[kc] * n_cat + hcat[kc], weights=hb.n_bought[kc], minlength=b * n_cat)
    ccat = art.item_category[ci]
    aff = np.where(ccat >= 0, cat_counts[cm * n_cat + np.maximum(ccat, 0)] / np.maximum(m_total[cm], 1.0), np.nan)
    als, knn, als_rank, knn_rank = _scores_and_ranks(art, u, ck, cm, ci, knn_key, knn_score)
    hl14 = hget(hb.hl14, np.nan)
    m_hl14 = np.bincount(hb.m, weights=np.nan_to_num(hb.hl14), minlength=b)
    cycle = art.item_cycle[ci].astype(float)
    pop_r, pop_p = art.item_pop_recent[ci], art.item_pop_prev[ci]
    cols = {
        "hist_n_bought": nb,
        "hist_rep_score": hget(rep, 0.0),
        "hist_days_last": days_last,
        "hist_days_first": days_first,
        "hist_mean_gap": gap,
        "hist_due_ratio": due,
        "hist_share": nb / np.maximum(m_max[cm], 1.0),
        "hist_n_view": hget(hb.n_view, 0.0),
        "hist_n_cart": hget(hb.n_cart, 0.0),
        "hist_n_favorite": hget(hb.n_favorite, 0.0),
        "hist_days_seen": hget(hb.days_seen),
        "item_pop_recent": np.log1p(pop_r),
        "item_pop_all": np.log1p(art.item_pop_all[ci]),
        "item_trend": np.log((pop_r + 1.0) / (pop_p + 1.0)),
        "item_repeat": art.item_repeat[ci],
        "item_price_ratio": art.item_price[ci] / m_line_value[cm],
        "als_score": als,
        "knn_score": knn,
        "cat_affinity": aff,
        "member_n_items": np.log1p(m_items[cm]),
        "member_total": np.log1p(m_total[cm]),
        "member_days_last": m_days_last[cm],
        "hist_rate": np.where(nb > 0, 28.0 * nb / np.maximum(np.nan_to_num(days_first, nan=0.0), 28.0), 0.0),
        "member_tenure": m_tenure[cm],
        "hist_hl14": hl14,
        "hist_hl56": hget(hb.hl56, np.nan),
        "hist_hl14_share": hl14 / np.maximum(m_hl14[cm], 1e-3),
        "hist_view_hl1": hget(hb.view_hl1, np.nan),
        "hist_cart_hl1": hget(hb.cart_hl1, np.nan),
        "item_cycle": cycle,
        "hist_due_item": days_last / cycle,
        "als_rank": als_rank,
        "knn_rank": knn_rank,
        "member_hl14": np.log1p(m_hl14[cm]),
    }
    return np.column_stack([cols[f] for f in FEATURES]).astype(np.float32)


def blend_score(X: np.ndarray) -> np.ndarray:
    """Repurchase first (the member's own frequency with a recency tie-break), then kNN and ALS, then popularity.

    Used when no learned ranker is in the model (it did not win on validation)."""
    f = {name: X[:, k].astype(float) for k, name in enumerate(FEATURES)}
    rep = f["hist_rep_score"]
    other = np.tanh(f["knn_score"]) + 0.5 * np.tanh(np.maximum(f["als_score"], 0)) + 0.01 * f["item_pop_recent"]
    return np.where(rep > 0, 10.0 + rep, other / 3.0)


# --------------------------------------------------------------------------------------------------------------------
# the whole scoring path

def score_candidates(art: RecsArtifacts, cand: Candidates, *, compiled: bool = True) -> np.ndarray:
    """Ranker scores of the candidates (the compiled predictor when there is one, else LightGBM: the same
    numbers), or the repurchase-first blend when the model has no ranker."""
    if art.ranker is None or len(cand.m) == 0:
        return blend_score(cand.X)
    if compiled and art.predictor is not None:  # (LightGBM is not even imported: ~2 s on a first request)
        return art.predictor.predict(cand.X)
    booster = art.booster
    cols = art.ranker_columns
    return booster.predict(cand.X if cols is None else cand.X[:, cols], num_threads=1)


def recommend(art: RecsArtifacts, history: pd.DataFrame, *, as_of: object | None = None,
              top_n: int | None = None, apply_rules: bool = True) -> pd.DataFrame:
    """Top-N items per member of `history` → DataFrame(member_id, rank, item_id, score, reason).

    `as_of` defaults to now; recency features are measured from it. Members without known items get the
    popularity fallback (their segment's list if a `segment` column is given).
    """
    as_of = pd.Timestamp.now() if as_of is None else pd.Timestamp(as_of)
    hb = prepare_history(history, art, as_of)
    with _single_thread_blas(art):
        cand = build_candidates(art, hb)
    return top_items(art, hb, cand, score_candidates(art, cand), top_n=top_n, apply_rules=apply_rules)


def _single_thread_blas(art: RecsArtifacts) -> Any:
    """One BLAS thread: a one-member matrix-vector product is 5× slower when BLAS wakes its thread pool, and batch
    scoring already runs one process per core (so threads would only fight). Optional dependency."""
    import contextlib

    if art.blas is None:
        return contextlib.nullcontext()
    return art.blas.limit(limits=1, user_api="blas")


def top_items(art: RecsArtifacts, hb: HistoryBatch, cand: Candidates, score: np.ndarray, *,
              top_n: int | None = None, apply_rules: bool = True, online: bool = True) -> pd.DataFrame:
    """Apply the business rules to scored candidates and keep the top-N per member, with reasons (one member,
    `online`: one compiled pass and reasons for the top rows only, the same frame)."""
    top_n = int(top_n or art.p["top_n"])
    if online and hb.b == 1 and art.online_kernel:
        out = _top_items_one(art, hb, cand, score, top_n, apply_rules)
        if out is not None:
            return out
    nb = cand.X[:, FEATURES.index("hist_n_bought")]
    days_bought = np.where(nb > 0, cand.X[:, FEATURES.index("hist_days_last")].astype(float), np.nan)
    keep = np.ones(len(cand.m), bool)
    if apply_rules:
        keep = allowed_mask(cand.i, days_bought, item_ids=art.item_ids, item_category=art.item_category,
                            categories=art.categories, consumable=art.consumable, rules=art.rules)
    idx = np.flatnonzero(keep)
    order, rank = group_rank(cand.m[idx], score[idx])
    sel = idx[order[rank < top_n]]
    r = rank[rank < top_n]
    gap = cand.X[sel, FEATURES.index("hist_mean_gap")].astype(float)
    engaged = (cand.X[sel, FEATURES.index("hist_n_view")] + cand.X[sel, FEATURES.index("hist_n_cart")]
               + cand.X[sel, FEATURES.index("hist_n_favorite")])
    seed = cand.seed[sel]
    seed_ids = np.where(seed >= 0, art.item_ids[np.maximum(seed, 0)], "")
    cat = art.item_category[cand.i[sel]]
    cat_names = (np.where(cat >= 0, art.categories[np.maximum(cat, 0)], "") if len(art.categories)
                 else np.full(len(sel), "", dtype=object))
    why = reasons(n_bought=nb[sel], mean_gap=gap, n_engaged=engaged, seed_item=seed_ids, category=cat_names,
                  source=cand.source[sel])
    return output_frame({
        "member_id": string_array(hb.member_ids[cand.m[sel]]),
        "rank": (r + 1).astype(np.int64),
        "item_id": string_array(art.item_ids[cand.i[sel]]),
        "score": score[sel].astype(float),
        "reason": string_array(why),
    })


_NB, _DL, _GAP = FEATURES.index("hist_n_bought"), FEATURES.index("hist_days_last"), FEATURES.index("hist_mean_gap")
_VIEW, _CART, _FAV = FEATURES.index("hist_n_view"), FEATURES.index("hist_n_cart"), FEATURES.index("hist_n_favorite")


def _top_items_one(art: RecsArtifacts, hb: HistoryBatch, cand: Candidates, score: np.ndarray, top_n: int,
                   apply_rules: bool) -> pd.DataFrame | None:
    """`top_items` for one member: rules and top-N in one compiled pass (`recs_online.top`), reasons for those
    rows only; None on a NaN score (the caller runs the batch code)."""
    from .recs_online import reasons_few, string_array as strings, top

    X = cand.X
    sel = top(score, cand.i, X[:, _DL], X[:, _NB], art.static_allowed, art.consumable, art.rules, top_n,
              apply_rules)
    if sel is None:
        return None
    items = cand.i[sel]
    seed = cand.seed[sel].tolist()
    ids = art.item_ids
    seed_ids = [ids[s] if s >= 0 else "" for s in seed]
    if len(art.categories):
        cat_names = [art.categories[c] if c >= 0 else "" for c in art.item_category[items].tolist()]
    else:
        cat_names = [""] * len(sel)
    why = reasons_few(n_bought=X[sel, _NB], mean_gap=X[sel, _GAP].astype(float),
                      n_engaged=X[sel, _VIEW] + X[sel, _CART] + X[sel, _FAV], seed_item=seed_ids,
                      category=cat_names, source=cand.source[sel])
    return output_frame({
        "member_id": strings([str(hb.member_ids[0])] * len(sel)),
        "rank": np.arange(1, len(sel) + 1, dtype=np.int64),
        "item_id": strings(ids[items].tolist()),
        "score": score[sel].astype(float),
        "reason": strings(why),
    })


def output_frame(columns: dict[str, Any]) -> pd.DataFrame:
    """`pd.DataFrame(columns)` for freshly built, equal-length 1-d arrays (numpy or pandas extension arrays, one
    block each: the dict constructor's layout), through pandas' block constructor (`pd.api.internals`, ~4× less
    than the dict constructor's checks), else its array constructor; the same frame (tested)."""
    from_blocks = getattr(getattr(getattr(pd, "api", None), "internals", None), "create_dataframe_from_blocks", None)
    if from_blocks is not None:
        n = len(next(iter(columns.values())))
        blocks = [(v.reshape(1, n) if isinstance(v, np.ndarray) else v, np.array([k], dtype=np.intp))
                  for k, v in enumerate(columns.values())]
        return from_blocks(blocks, index=pd.RangeIndex(n), columns=_column_index(tuple(columns))._view())
    from_arrays = getattr(pd.DataFrame, "_from_arrays", None)
    if from_arrays is None:  # pragma: no cover - a pandas without the internal constructor
        return pd.DataFrame(columns)
    arrays = list(columns.values())
    return from_arrays(arrays, columns=_column_index(tuple(columns))._view(), index=pd.RangeIndex(len(arrays[0])),
                       verify_integrity=False)


@functools.lru_cache(maxsize=8)
def _column_index(names: tuple[str, ...]) -> pd.Index:
    """The frame's column labels, built once (each frame gets a view of its own, so setting `columns.name` on one
    does not reach the others): building a string Index from names is half of the frame constructor's ~0.1 ms."""
    return pd.Index(list(names))


# --------------------------------------------------------------------------------------------------------------------
# the MLflow pyfunc

class RecsModel(mlflow.pyfunc.PythonModel):
    """pyfunc: member history rows (or bare member_ids) → member_id, rank, item_id, score, reason.

    Input: one row per member and item in the `HISTORY_REQUIRED` (+ optional) columns, e.g. the online table
    `recent_items`, or a row with only `member_id` (and optionally `segment`) for a member without history.
    Params: `as_of` (timestamp recency is measured from; default now), `top_n`, `apply_rules` (default true).
    """

    _skip_type_hint_validation = True  # predict is called directly (serving validates at its edge): no wrapper

    def __init__(self, art: RecsArtifacts | None = None) -> None:
        self.art = art

    def save_artifacts(self, folder: Path) -> dict[str, str]:
        path = self.art.save(Path(folder) / "recs")
        return {"recs": str(path)}

    def load_context(self, context) -> None:  # noqa: ANN001 (mlflow PythonModelContext)
        self.art = RecsArtifacts.load(context.artifacts["recs"])
        _ = self.art.predictor  # compile the ranker now (model load), not on the first request
        # and everything else the one-member path builds once: ALS arrays, compiled loops, the id table
        _ = self.art.als_order, self.art.als_base, self.art.feature_kernel, self.art.item_table
        _ = self.art.online_kernel, self.art.static_allowed, self.art.blas

    def predict(self, context, model_input, params=None):  # noqa: ANN001 (no type hints: skip mlflow's wrapping)
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        params = dict(params or {})
        as_of = params.get("as_of")
        if as_of is None and "as_of" in frame.columns and frame["as_of"].notna().any():
            as_of = frame["as_of"].dropna().iloc[0]
        return recommend(self.art, frame, as_of=as_of, top_n=params.get("top_n"),
                         apply_rules=bool(params.get("apply_rules", True)))
