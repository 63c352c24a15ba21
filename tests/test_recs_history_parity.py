"""Training/serving parity of the recommender's member history (issue #7, "serving-ready model").

The ranker is trained on `summarise_history(orders, events, T, window_days=HISTORY_DAYS)`: purchases AND the
member's view / cart / favorite events per item (rows for items only seen), over the 365 days before T. Batch
scoring, campaign lists and member_id answers read the online `recent_items` table (`compute_recent_items`), and
inline histories go through `serving.recs_history.FastSummary`. On a generated store WITH events and more than a
year of history, all three give the member the same history rows and so the same recommendations (items, order,
scores, reasons); online tables built before the event columns existed still load and score as they did.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from features.definitions.recent_items import (DECAYED_EVENT_COUNTS, DECAYED_ORDER_COUNTS, EVENT_COUNTS,
                                               RECENT_ITEMS_DAYS)
from features.online import OnlineFeatureTable, materialize
from features.pipeline import compute_recent_items
from features.store import Store
from serving.compose import recommend_frame
from serving.recs_history import FastSummary
from training.member_pyfunc.recs import (DECAY_COLUMNS, FEATURES, HISTORY_DAYS, HISTORY_OPTIONAL, HISTORY_REQUIRED,
                                         RecsModel, summarise_history)

sys.path.insert(0, str(Path(__file__).parent))

AS_OF = pd.Timestamp("2025-06-01")
RANKER_CUTOFF = pd.Timestamp("2025-03-01")
EVENT_COLUMNS = (*EVENT_COUNTS, *DECAYED_EVENT_COUNTS, "last_seen_at")
TOP_N = 10


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A synthetic store with events (Jan 2024 – Dec 2025), a recs model with a LightGBM ranker trained on the
    event-aware history, and the store's tables."""
    from features.synthetic import generate_to_store
    from training.recs.candidates import CandidateConfig, fit_candidates
    from training.recs.ranker import RankerConfig, rank_frame, train_ranker
    from training.recs.train import load_tables, truth_at

    path = tmp_path_factory.mktemp("parity") / "store"
    generate_to_store(250, 21, path, workers=1)
    store = Store(path)
    tables = load_tables(store)
    small = CandidateConfig(factors=8, iterations=6, knn_k=10, n_hist=50, n_als=20, n_knn=20, n_pop=10)
    fc0 = fit_candidates(tables, RANKER_CUTOFF, small)
    booster, _ = train_ranker([rank_frame(fc0, truth_at(tables, RANKER_CUTOFF, 60))], None,
                              RankerConfig(num_leaves=7, min_data_in_leaf=5), num_boost_round=40)
    fc = fit_candidates(tables, AS_OF, small)
    fc.art.ranker = booster.model_to_string()
    used = dict(zip(FEATURES, booster.feature_importance("split").tolist(), strict=True))
    orders, events = tables["orders"], tables["events"]
    members = pd.unique(pd.concat([orders.loc[orders["ordered_at"] < AS_OF, "member_id"],
                                   events.loc[events["occurred_at"] < AS_OF, "member_id"]]).astype("string"))
    return {"store": store, "tables": tables, "model": RecsModel(fc.art), "used": used,
            "members": sorted(members.tolist())}


def _training_history(world: dict) -> pd.DataFrame:
    t = world["tables"]
    return summarise_history(t["orders"], t["events"], AS_OF, window_days=HISTORY_DAYS)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["member_id", "rank"], kind="stable").reset_index(drop=True)


def _recs(world: dict, history: pd.DataFrame, members: list[str]) -> pd.DataFrame:
    return _sorted(recommend_frame(world["model"], history, members, TOP_N, AS_OF))


def test_the_columns_and_half_lives_are_the_models() -> None:
    """features/definitions/recent_items.py mirrors the model's constants (the bundled model cannot import it)."""
    assert RECENT_ITEMS_DAYS == HISTORY_DAYS
    assert DECAYED_ORDER_COUNTS == {c: hl for c, (what, hl) in DECAY_COLUMNS.items() if what == "buy"}
    assert DECAYED_EVENT_COUNTS == {c: (what, hl) for c, (what, hl) in DECAY_COLUMNS.items() if what != "buy"}
    assert EVENT_COUNTS == {"n_view": "view", "n_cart": "cart", "n_favorite": "favorite"}
    assert set(EVENT_COLUMNS) <= set(HISTORY_OPTIONAL)


def test_recent_items_equal_the_training_summary(world: dict) -> None:
    """Every column of `compute_recent_items` equals the windowed training summary, row for row (seen-only items,
    event counts, decayed counts, last_seen_at), on a store whose history is longer than the window."""
    t = world["tables"]
    full = summarise_history(t["orders"], t["events"], AS_OF)
    train = _training_history(world).set_index(["member_id", "item_id"]).sort_index()
    online = compute_recent_items(world["store"], AS_OF).set_index(["member_id", "item_id"]).sort_index()
    assert len(full) > len(train)  # the window leaves rows out
    assert (train["n_bought"] == 0).sum() > 50 and (train["n_view"] > 0).sum() > 50 and (train["n_cart"] > 0).any()
    assert online.index.equals(train.index)
    assert list(online.columns[online.columns != "category"]) == list(HISTORY_REQUIRED[2:]) + [
        c for c in ("first_bought_at", "spend", *DECAYED_ORDER_COUNTS) if c in HISTORY_OPTIONAL] + list(EVENT_COLUMNS)
    for c in train.columns:
        if pd.api.types.is_datetime64_any_dtype(train[c]):
            assert online[c].astype("datetime64[us]").equals(train[c].astype("datetime64[us]")), c
        else:
            np.testing.assert_allclose(online[c].to_numpy(dtype=float), train[c].to_numpy(dtype=float),
                                       rtol=1e-12, atol=1e-12, err_msg=c)


def test_batch_recommendations_equal_the_training_summarys(world: dict) -> None:
    """For every member: recommendations from `compute_recent_items` (batch scoring, campaign lists, the online
    table) equal those from the training summary: items, order, scores and reasons."""
    assert sum(world["used"][f] for f in ("hist_n_view", "hist_n_cart", "hist_n_favorite", "hist_days_seen",
                                          "hist_view_hl1", "hist_cart_hl1")) > 0  # the ranker uses the events
    members = world["members"]
    online = compute_recent_items(world["store"], AS_OF)
    served = _recs(world, online, members)
    trained = _recs(world, _training_history(world), members)
    assert served["member_id"].nunique() == len(members) > 100
    pd.testing.assert_frame_equal(served, trained, check_exact=True)
    # not vacuous: the history as served before the event columns (orders only) gives other answers
    old = online.loc[online["n_bought"] > 0, [c for c in online.columns if c not in EVENT_COLUMNS]]
    before = _recs(world, old, members)
    differ = [m for m, g in trained.groupby("member_id") if not g.equals(before[before["member_id"] == m]
                                                                         .set_index(g.index))]
    assert len(differ) > len(members) // 10


def test_one_member_path_equals_the_batch(world: dict, tmp_path: Path) -> None:
    """The member_id request (one member's rows from the online table, the compiled one-member path) gets the
    batch answer, which is the training summary's."""
    path = materialize(world["store"], AS_OF, tmp_path / "online.duckdb")
    tbl = OnlineFeatureTable(path)
    assert set(EVENT_COLUMNS) <= set(tbl.recent_items(world["members"][0]).columns)
    trained = _recs(world, _training_history(world), world["members"])
    assert world["model"].art.online_kernel in (True, False)
    for m in world["members"][::6]:
        one = _recs(world, tbl.recent_items(m), [m])
        want = trained[trained["member_id"] == m].reset_index(drop=True)
        pd.testing.assert_frame_equal(one, want, check_exact=True, obj=m)


def test_inline_history_is_summarised_over_the_same_window(world: dict) -> None:
    """An inline history (the member's full orders and events, older than a year included) is summarised over the
    365 days before as_of, as training and the online table are: the same rows, hence the member_id answer."""
    from features.contract import EVENTS, ORDERS, conform

    t = world["tables"]
    fast = FastSummary.for_model(summarise_history, window_days=RECENT_ITEMS_DAYS)
    assert fast.columns is not None and fast.ref_window  # the fast path passed its start-up check with the window
    ref_only = dataclasses.replace(fast, columns=None)

    def older(orders, events, as_of=None):  # noqa: ANN001, ANN202 - a model logged before training used the window
        return summarise_history(orders, events, as_of)

    fast_old = FastSummary.for_model(older, window_days=RECENT_ITEMS_DAYS)
    assert not fast_old.ref_window
    o_all = t["orders"][t["orders"]["ordered_at"] < AS_OF]
    e_all = t["events"][t["events"]["occurred_at"] < AS_OF]
    old_start = AS_OF - pd.Timedelta(days=RECENT_ITEMS_DAYS)
    long = o_all.groupby("member_id")["ordered_at"].min()
    members = sorted(long[long < old_start].index.astype(str))[:12]
    assert len(members) >= 8  # members with purchases before the window: the window matters for them
    trained = _recs(world, _training_history(world), members)
    cut = 0  # members whose whole history has items the window leaves out (without the window: another answer)
    for m in members:
        o = conform(o_all[o_all["member_id"] == m].sort_values("ordered_at", kind="stable"), ORDERS)
        e = conform(e_all[e_all["member_id"] == m].sort_values("occurred_at", kind="stable"), EVENTS)
        want = summarise_history(o, e, AS_OF, window_days=HISTORY_DAYS)
        cut += len(summarise_history(o, e, AS_OF)) > len(want)
        for name, fs in (("fast", fast), ("reference", ref_only)):
            got = fs(o, e, AS_OF)
            pd.testing.assert_frame_equal(got.reset_index(drop=True), want, check_exact=True, obj=f"{m} {name}")
        # a model logged before training used the window was trained on whole histories: it still gets them
        pd.testing.assert_frame_equal(fast_old(o, e, AS_OF), older(o, e, AS_OF), check_exact=True)
        recs = _recs(world, fast(o, e, AS_OF), [m])
        pd.testing.assert_frame_equal(recs, trained[trained["member_id"] == m].reset_index(drop=True),
                                      check_exact=True, obj=m)
    assert cut >= 3


def test_online_tables_without_event_columns_still_load_and_score(world: dict, tmp_path: Path) -> None:
    """A table materialized before this change (recent_items with order columns only, no seen-only rows) loads,
    serves its rows, and scores as it did: missing event counts are 0, decayed event counts unknown (NaN),
    last_seen_at = last_bought_at."""
    from serving.precompute import _recent_items

    path = materialize(world["store"], AS_OF, tmp_path / "online.duckdb")
    con = duckdb.connect(str(path))
    try:
        drop = ", ".join(EVENT_COLUMNS)
        con.execute(f"CREATE TABLE old_items AS SELECT * EXCLUDE ({drop}) FROM recent_items WHERE n_bought > 0 "
                    "ORDER BY member_id, item_id")
        con.execute("DROP TABLE recent_items")
        con.execute("ALTER TABLE old_items RENAME TO recent_items")
        con.execute("CHECKPOINT")
    finally:
        con.close()
    tbl = OnlineFeatureTable(path)
    rows = _recent_items(path)
    assert not set(EVENT_COLUMNS) & set(rows.columns) and len(rows) == tbl.recent_item_rows > 0
    members = world["members"]
    got = _recs(world, rows, members)
    filled = rows.assign(n_view=0.0, n_cart=0.0, n_favorite=0.0, n_view_hl1=np.nan, n_cart_hl1=np.nan,
                         last_seen_at=rows["last_bought_at"])
    pd.testing.assert_frame_equal(got, _recs(world, filled, members), check_exact=True)
    m = rows["member_id"].iloc[0]
    pd.testing.assert_frame_equal(_recs(world, tbl.recent_items(m), [m]),
                                  got[got["member_id"] == m].reset_index(drop=True), check_exact=True)


def test_store_without_events_gets_the_training_summary(tmp_path: Path, world: dict) -> None:
    """Without an events table the served rows are the training summary's (events=None): event counts 0, decayed
    event counts NaN, last_seen_at = last_bought_at."""
    t = world["tables"]
    store = Store(tmp_path / "no_events")
    store.path.mkdir(parents=True)
    store.write("orders", t["orders"])
    online = compute_recent_items(store, AS_OF).set_index(["member_id", "item_id"]).sort_index()
    train = summarise_history(t["orders"], None, AS_OF, window_days=HISTORY_DAYS)
    train = train.set_index(["member_id", "item_id"]).sort_index()
    assert online.index.equals(train.index)
    for c in ("n_view", "n_cart", "n_favorite", "n_view_hl1", "n_cart_hl1"):
        np.testing.assert_array_equal(online[c].to_numpy(dtype=float), train[c].to_numpy(dtype=float), err_msg=c)
    assert online["last_seen_at"].astype("datetime64[us]").equals(train["last_seen_at"].astype("datetime64[us]"))
