"""One loyalty replay per inline request: the features of an inline history whose loyalty columns come from the
one-member replay (`loyalty.member.member_state`, which the service computes anyway for the answer) equal the batch
features, whose loyalty columns come from the vectorised rules (`loyalty.batch`), for every member of an awkward
generated store (refunds, cancellations, null amounts and categories, same-instant orders, every event type)."""
from __future__ import annotations

import pandas as pd
import pytest

from features.engine import EnginePool
from features.pipeline import LOYALTY_FEATURES, compute_features, compute_inline_features
from loyalty.config import load_config
from loyalty.member import member_state
from tests.fixtures_features import make_tables, write_store

AS_OF = pd.Timestamp("2022-11-20 18:45")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tables = make_tables(90, 8, days=420, null_amounts=True)
    store = write_store(tmp_path_factory.mktemp("inline_loyalty") / "store", tables)
    return tables, compute_features(store, AS_OF)


def test_inline_features_with_the_member_replay_equal_batch(world) -> None:
    tables, batch = world
    cfg = load_config()
    pool = EnginePool({"items": tables["items"]})
    got = []
    for m in batch["member_id"]:
        own = {k: v[v["member_id"] == m].reset_index(drop=True) for k, v in tables.items() if "member_id" in v}
        try:
            state = member_state(own["orders"], own["events"], own["members"], AS_OF, cfg, member_id=m)
        except LookupError:
            state = None  # not known before as_of from the rule's point of view: the batch path is used
        loyalty = None if state is None else pd.DataFrame(
            {"member_id": [m], **{c: [getattr(state, c)] for c in LOYALTY_FEATURES}})
        with pool.engine() as eng:
            got.append(compute_inline_features({**own, "items": tables["items"]}, AS_OF, engine=eng, loyalty=loyalty))
    got = pd.concat(got, ignore_index=True)
    assert got["member_id"].tolist() == batch["member_id"].tolist()
    for c in LOYALTY_FEATURES:  # the loyalty columns exactly (integers and cents)
        pd.testing.assert_series_equal(got[c], batch[c], check_exact=True)
    pd.testing.assert_frame_equal(got, batch, check_exact=False, rtol=1e-9, atol=1e-9)


def test_without_a_state_it_is_compute_features(world) -> None:
    tables, batch = world
    m = batch["member_id"].iloc[3]
    own = {k: (v[v["member_id"] == m].reset_index(drop=True) if "member_id" in v else v) for k, v in tables.items()}
    pd.testing.assert_frame_equal(compute_inline_features(own, AS_OF), compute_features(own, AS_OF), check_exact=True)
