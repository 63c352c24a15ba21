"""Small generated purchase histories for the recommendation tests (fast, with known structure)."""
from __future__ import annotations

import numpy as np
import pandas as pd


def make_tables(n_members: int = 150, n_weeks: int = 24, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Members each favour one of three categories; a few staple items per category are rebought every ~1-3
    weeks, the rest are occasional one-off buys within the favourite category (so item-item and ALS structure
    exist). Returns contract tables orders, items, members."""
    rng = np.random.default_rng(seed)
    cats = np.array(["美妆", "母婴", "食品"])
    n_items = 60
    item_cat = np.repeat(np.arange(3), n_items // 3)
    staple = np.tile(np.r_[np.ones(5, bool), np.zeros(n_items // 3 - 5, bool)], 3)
    taste = rng.integers(0, 3, n_members)
    start = pd.Timestamp("2024-01-01")
    rows = []
    for w in range(n_weeks):
        shop = rng.random(n_members) < 0.6
        for m in np.flatnonzero(shop):
            own = np.flatnonzero(item_cat == taste[m])
            mine = own[staple[own]][: 2 + m % 3]
            bought = mine[rng.random(len(mine)) < 0.55]
            extra = rng.choice(own[~staple[own]], size=rng.integers(0, 3), replace=False)
            other = rng.choice(n_items, size=int(rng.random() < 0.2), replace=False)
            day = start + pd.Timedelta(days=7 * w + int(rng.integers(0, 7)), hours=int(rng.integers(8, 22)))
            for it in np.unique(np.r_[bought, extra, other]).astype(int):
                rows.append((f"o{w}-{m}", f"m{m}", day, float(5 + it), f"i{it}"))
    orders = pd.DataFrame(rows, columns=["order_id", "member_id", "ordered_at", "amount", "item_id"])
    orders["quantity"] = 1.0
    orders["status"] = "paid"
    orders["category"] = cats[item_cat[orders["item_id"].str[1:].astype(int)]]
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(n_items)], "category": cats[item_cat],
                          "price": 5.0 + np.arange(n_items), "is_consumable": staple})
    members = pd.DataFrame({"member_id": [f"m{m}" for m in range(n_members)],
                            "region": np.where(np.arange(n_members) % 2 == 0, "浙江", "广东")})
    return {"orders": orders, "items": items, "members": members}


SMALL_CUTOFF = "2024-04-08"


def fit_small(config):  # noqa: ANN001, ANN201 (a CandidateConfig → fitted artefacts)
    """The small candidate model the one-member latency tests compare paths on (60 members, 16 weeks, seed 11);
    each test module passes its own config."""
    from training.recs.candidates import fit_candidates

    return fit_candidates(make_tables(n_members=60, n_weeks=16, seed=11), SMALL_CUTOFF, config)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-equal arrays (NaN equal to NaN, -0.0 distinct from 0.0)."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
