"""Synthetic store generator: determinism, contract conformance, realistic shapes, recoverable ground truth."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.contract import EVENT_TYPES, GENDERS, SCHEMAS, STATUSES
from features.store import Store
from features.synthetic import arrow_schema, generate, write_store
from features.synthetic.catalogue import CATEGORY_NAMES, N_CLUSTERS, N_TIERS, make_catalogue
from features.synthetic.orders import argsort_seconds, poisson_days

N = 3000


@pytest.fixture(scope="module")
def data():
    return generate(N, 11)


@pytest.fixture(scope="module")
def frames(data):
    return {t: data.frame(t) for t in ("members", "orders", "events", "items")}


# ------------------------------------------------------------------ determinism


def test_same_seed_same_store_and_workers_do_not_change_data():
    a = generate(900, 5, chunk_members=300)
    b = generate(900, 5, chunk_members=300, workers=2)
    for t in a.tables:
        assert a.tables[t].equals(b.tables[t]), t
    pd.testing.assert_frame_equal(a.ground_truth, b.ground_truth)
    pd.testing.assert_frame_equal(a.ground_truth_cycles, b.ground_truth_cycles)
    c = generate(900, 6, chunk_members=300)
    assert not a.tables["orders"].equals(c.tables["orders"])


def test_chunks_have_distinct_members_and_orders():
    d = generate(700, 2, chunk_members=250)
    o = d.orders
    assert d.members["member_id"].is_unique and len(d.members) == 700
    # an order belongs to one member, and order ids are unique across chunks
    assert (o.groupby("order_id")["member_id"].nunique() == 1).all()
    assert set(o["member_id"]) <= set(d.members["member_id"])


# ------------------------------------------------------------------ contract


def test_tables_match_the_contract(data, frames, tmp_path):
    for t, tab in data.tables.items():
        assert tab.schema == arrow_schema(t), t
        for c in SCHEMAS[t].required:
            assert frames[t][c].notna().all(), (t, c)
    write_store(data, tmp_path / "s")
    store = Store(tmp_path / "s").check()
    for t in data.tables:
        pd.testing.assert_frame_equal(store.read(t), frames[t], check_dtype=True)
    assert (tmp_path / "s" / "ground_truth.parquet").exists()
    assert (tmp_path / "s" / "ground_truth_cycles.parquet").exists()


def test_values_are_valid(data, frames):
    m, o, e, i = frames["members"], frames["orders"], frames["events"], frames["items"]
    assert m["member_id"].is_unique and i["item_id"].is_unique
    assert set(o["status"]) <= set(STATUSES) and set(e["type"]) <= set(EVENT_TYPES)
    assert set(m["gender"]) <= set(GENDERS)
    assert set(o["category"]) == set(CATEGORY_NAMES) == set(i["category"])
    assert (o["amount"] >= 0).all() and (o["quantity"] >= 1).all() and (o["discount"] >= 0).all()
    assert not o.duplicated().any(), "no two identical order lines"
    start, end = pd.Timestamp(data.meta["start"]), pd.Timestamp(data.meta["end"]) + pd.Timedelta(days=1)
    for df, col in ((o, "ordered_at"), (e, "occurred_at")):
        assert df[col].min() >= start and df[col].max() < end
    joined = o["member_id"].map(m.set_index("member_id")["joined_at"])
    assert (o["ordered_at"] > joined).all(), "no order before the member joined"
    ej = e["member_id"].map(m.set_index("member_id")["joined_at"])
    assert (e["occurred_at"] >= ej.dt.floor("s")).all()
    assert (m["age"] >= 18).all() and (m["age"] <= 80).all()
    assert (m["birthday"] < m["joined_at"].max()).all()
    assert set(i.loc[i["is_consumable"], "category"]) <= {"美妆", "母婴", "食品", "个护"}
    assert o["item_id"].isin(i["item_id"]).all()
    assert e["item_id"].dropna().isin(i["item_id"]).all()


def test_refunds_and_cancellations_are_own_rows_after_a_paid_line(frames):
    o = frames["orders"]
    paid = o[o["status"] == "paid"].set_index(["order_id", "item_id"])
    for status in ("refunded", "cancelled"):
        undo = o[o["status"] == status]
        assert len(undo) > 0
        orig = paid.loc[list(zip(undo["order_id"], undo["item_id"]))]
        assert (undo["ordered_at"].to_numpy() > orig["ordered_at"].to_numpy()).all()
        np.testing.assert_allclose(undo["amount"].to_numpy(), orig["amount"].to_numpy())
        assert (undo["member_id"].to_numpy() == orig["member_id"].to_numpy()).all()
    # a line is undone at most once
    undone = o[o["status"] != "paid"]
    assert not undone.duplicated(["order_id", "item_id"]).any()


# ------------------------------------------------------------------ realistic shapes


def test_volume_amounts_refunds_and_consent(frames):
    o, m = frames["orders"], frames["members"]
    paid = o[o["status"] == "paid"]
    assert 15 <= len(paid) / N <= 26, "about 20 order lines per member over two years"
    share_refund = (o["status"] == "refunded").sum() / len(paid)
    assert 0.02 <= share_refund <= 0.04
    assert 0.03 <= 1 - m["marketing_consent"].mean() <= 0.07
    order_value = paid.groupby("order_id")["amount"].sum()
    assert 50 <= order_value.median() <= 250
    assert 20 <= order_value.quantile(0.05) and order_value.quantile(0.9) <= 1500
    assert order_value.max() > 3 * order_value.quantile(0.99) / 2, "a long tail"
    assert 0.05 <= paid["coupon_used"].mean() <= 0.5
    assert (paid["discount"] > 0).mean() > 0.3


def test_618_and_double11_peaks(frames):
    paid = frames["orders"].query("status == 'paid'")
    per_day = paid.groupby(paid["ordered_at"].dt.floor("D")).size()
    for y in (2024, 2025):
        may = per_day[f"{y}-05-01":f"{y}-05-31"].mean()
        sep = per_day[f"{y}-09-01":f"{y}-09-30"].mean()
        assert per_day[pd.Timestamp(f"{y}-06-18")] > 2.5 * may
        assert per_day[pd.Timestamp(f"{y}-11-11")] > 4 * sep
        assert per_day[f"{y}-06-01":f"{y}-06-30"].mean() > 1.15 * may
        assert per_day[f"{y}-11-01":f"{y}-11-30"].mean() > 1.3 * sep


def test_evening_peak_for_office_workers(data, frames):
    paid = frames["orders"].query("status == 'paid'")
    persona = paid["member_id"].map(data.ground_truth.set_index("member_id")["persona"])
    hours = paid.loc[persona == "office_worker", "ordered_at"].dt.hour
    share = hours.value_counts(normalize=True)
    assert share.loc[[19, 20, 21]].mean() > 2 * share.loc[[9, 10, 11]].mean()
    assert share.idxmax() in (19, 20, 21)


def test_behaviour_follows_the_latent_parameters(data, frames):
    gt = data.ground_truth.set_index("member_id")
    paid = frames["orders"].query("status == 'paid'")
    n_orders = paid.groupby("member_id")["order_id"].nunique().reindex(gt.index, fill_value=0)
    # observed orders track the ground-truth expectation (base orders are most of them)
    assert np.corrcoef(n_orders, gt["expected_base_orders"])[0, 1] > 0.7
    ev = frames["events"].groupby("member_id").size().reindex(gt.index, fill_value=0)
    active = gt["expected_base_orders"] > 1
    rho = pd.Series(ev[active]).rank().corr(gt.loc[active, "engagement"].rank())
    assert rho > 0.3, "event volume correlates with engagement"
    # members who dropped out before the window ends stop ordering afterwards
    last = paid.groupby("member_id")["ordered_at"].max()
    dropped = gt["dropout_at"].notna()
    after = last.reindex(gt.index[dropped]).dropna() > gt.loc[dropped, "active_to"].reindex(last.index).dropna()
    assert not after.any()
    # spend level shifts purchases toward pricier items
    value = paid.groupby("member_id")["amount"].mean()
    rho_spend = value.rank().corr(gt["spend_level"].reindex(value.index).rank())
    assert rho_spend > 0.2


def test_replenishment_cycles_are_recoverable(data, frames):
    """Median gap between a member's purchases of a consumable category is close to the true cycle."""
    cy = data.ground_truth_cycles
    cy = cy[cy["purchases_in_window"] >= 6]
    assert len(cy) > 100
    paid = frames["orders"].query("status == 'paid'")
    t = paid[["member_id", "category", "ordered_at"]].drop_duplicates().sort_values("ordered_at")
    t = t.merge(cy[["member_id", "category", "cycle_days"]], on=["member_id", "category"])
    t["gap"] = t.groupby(["member_id", "category"])["ordered_at"].diff().dt.total_seconds() / 86400
    med = t.groupby(["member_id", "category"]).agg(gap=("gap", "median"), truth=("cycle_days", "first"))
    ratio = (med["gap"] / med["truth"]).median()
    assert 0.75 <= ratio <= 1.1, ratio
    assert med["gap"].corr(med["truth"], method="spearman") > 0.7


def test_ground_truth_tables(data):
    gt, cy = data.ground_truth, data.ground_truth_cycles
    assert len(gt) == N and gt["member_id"].is_unique
    aff = gt[[f"affinity_{c}" for c in CATEGORY_NAMES]].to_numpy()
    np.testing.assert_allclose(aff.sum(axis=1), 1.0)
    assert (gt.loc[gt["is_loyal"], "churn_hazard"] == 0).all() and gt.loc[gt["is_loyal"], "dropout_at"].isna().all()
    assert (gt["purchase_rate"] > 0).all()
    assert set(cy["category"]) == {"美妆", "母婴", "食品", "个护"}
    assert not cy.duplicated(["member_id", "category"]).any()
    assert (cy["cycle_days"] > 3).all()


# ------------------------------------------------------------------ building blocks (property tests)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 2**32 - 1), max_size=300))
def test_argsort_seconds_is_a_stable_sort(values):
    a = np.array(values, dtype=np.int64)
    np.testing.assert_array_equal(argsort_seconds(a), np.argsort(a, kind="stable"))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=1, max_size=20))
def test_poisson_days_stay_in_each_rows_window(seed, windows):
    rng = np.random.default_rng(seed)
    a = np.array([min(x, y) for x, y in windows])
    b = np.array([max(x, y) for x, y in windows])
    cum = np.r_[0.0, np.cumsum(rng.uniform(0.1, 3.0, 31))]
    owner, day = poisson_days(rng, np.full(len(a), 2.0), a, b, cum)
    assert (day >= a[owner]).all() and (day < b[owner]).all()
    assert (np.diff(owner) >= 0).all()


def test_catalogue_picks_from_the_requested_group():
    rng = np.random.default_rng(0)
    cat = make_catalogue(rng, 1000)
    k = 5000
    c, cl, ti = rng.integers(0, len(CATEGORY_NAMES), k), rng.integers(0, N_CLUSTERS, k), rng.integers(0, N_TIERS, k)
    item = cat.pick(rng, c, cl, ti)
    assert (cat.category[item] == c).all() and (cat.cluster[item] == cl).all() and (cat.tier[item] == ti).all()
    staple = cat.pick_staple(rng, np.array([0, 1, 5, 6] * 10))
    assert cat.consumable[staple].all()
    assert isinstance(cat.table(), pa.Table)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="n_members"):
        generate(0, 1)
    with pytest.raises(ValueError, match="before start"):
        generate(10, 1, start="2025-01-01", end="2024-01-01")


# ------------------------------------------------------------------ campaign with a known effect


def test_campaign_response_has_the_known_uplift(data, frames):
    from features.synthetic.campaign import simulate_campaign_response

    gt = data.ground_truth
    rng = np.random.default_rng(1)
    ids = gt["member_id"].to_numpy()[rng.permutation(len(gt))]
    treated, control = ids[: len(ids) // 2], ids[len(ids) // 2:]
    resp = simulate_campaign_response(gt, frames["items"], treated, "2025-06-01", control=control, seed=3,
                                      base_uplift=0.3)
    truth = resp.truth.set_index("member_id")
    o = resp.orders
    assert list(o.columns) == SCHEMAS["orders"].names and o["order_id"].is_unique
    assert set(o["member_id"]) <= set(treated), "control members get no campaign orders"
    assert o["ordered_at"].between(pd.Timestamp("2025-06-01"), pd.Timestamp("2025-06-15")).all()
    expected = truth.loc[truth["treated"], "uplift_orders"].sum()
    assert abs(len(o) - expected) < 4 * np.sqrt(expected), (len(o), expected)
    assert (truth.loc[~truth["treated"], "uplift_orders"] == 0).all()
    assert truth["p_base_order"].between(0, 1).all()
    # alive members' baseline probability tracks their purchase rate
    alive = truth[truth["alive_at_send"]]
    rate = gt.set_index("member_id").loc[alive.index, "purchase_rate"]
    assert alive["p_base_order"].corr(rate, method="spearman") > 0.8
    again = simulate_campaign_response(gt, frames["items"], treated, "2025-06-01", control=control, seed=3,
                                       base_uplift=0.3)
    pd.testing.assert_frame_equal(again.orders, o)
    with pytest.raises(ValueError, match="both treated and control"):
        simulate_campaign_response(gt, frames["items"], treated[:5], "2025-06-01", control=treated[:2])
    with pytest.raises(ValueError, match="not in the ground truth"):
        simulate_campaign_response(gt, frames["items"], ["nobody"], "2025-06-01")
