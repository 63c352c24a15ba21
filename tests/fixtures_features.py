"""A tiny, self-contained store generator for the feature/label tests (independent of the synthetic package).

Histories are deliberately awkward: multi-line orders, refunds and cancellations as their own later rows, orders at
exactly midnight and at the same instant, null categories and amounts, members without orders, members who join
after the cutoff, events of every contract type plus an unknown one.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from features.contract import EVENT_TYPES

START = pd.Timestamp("2022-01-01")
CATEGORIES = ["美妆", "母婴", "服饰", "数码", "家居", "食品"]


def make_tables(n_members: int = 40, seed: int = 0, *, days: int = 500, with_optional: bool = True,
                null_amounts: bool = False) -> dict[str, pd.DataFrame]:
    """Contract tables (orders, and with_optional: members, events, items) as DataFrames."""
    rng = np.random.default_rng(seed)
    members = [f"m{i:04d}" for i in range(n_members)]
    items = pd.DataFrame({
        "item_id": [f"i{j:03d}" for j in range(30)],
        "category": [CATEGORIES[j % len(CATEGORIES)] for j in range(30)],
        "price": rng.gamma(2.0, 40.0, 30).round(2),
        "brand": [f"b{j % 7}" for j in range(30)],
        "is_consumable": [bool(j % 2) for j in range(30)],
    })
    rows = []
    oid = 0
    for m_i, m in enumerate(members):
        if m_i % 13 == 5:  # registered but never ordered
            continue
        n_orders = int(rng.integers(1, 14))
        times = START + pd.to_timedelta(np.sort(rng.uniform(0, days, n_orders)), unit="D")
        times = times.floor("min")
        if n_orders > 2 and m_i % 4 == 0:
            times = times.insert(1, times[0])  # two orders at the same instant
        if m_i % 7 == 0:
            times = times.insert(0, START + pd.Timedelta(days=int(rng.integers(0, days))))  # exactly midnight
        for t in times:
            oid += 1
            for _line in range(int(rng.integers(1, 4))):
                j = int(rng.integers(0, 30))
                amount = float(np.round(rng.gamma(2.0, 30.0), 2))
                disc = float(np.round(amount * rng.choice([0.0, 0.0, 0.1, 0.2]), 2))
                rows.append(dict(order_id=f"o{oid}", member_id=m, ordered_at=t, amount=amount, item_id=f"i{j:03d}",
                                 category=None if rng.random() < 0.1 else items.category[j],
                                 quantity=float(rng.integers(1, 3)), discount=disc,
                                 coupon_used=bool(rng.random() < 0.2), status="paid"))
                if rng.random() < 0.08:
                    later = t + pd.Timedelta(days=float(rng.uniform(0.5, 40)))
                    rows.append({**rows[-1], "ordered_at": later.floor("min"),
                                 "status": "refunded" if rng.random() < 0.7 else "cancelled"})
    orders = pd.DataFrame(rows)
    if null_amounts:
        orders["amount"] = np.nan
    out = {"orders": orders}
    if not with_optional:
        return out
    joined = START - pd.to_timedelta(rng.integers(0, 400, n_members), unit="D")
    late = np.arange(n_members) % 11 == 3
    joined = joined.where(~late, START + pd.Timedelta(days=days // 2))  # joins mid-way
    out["members"] = pd.DataFrame({
        "member_id": members,
        "joined_at": pd.Series(joined).where(np.arange(n_members) % 9 != 1, pd.NaT),
        "birthday": pd.to_datetime("1970-01-01") + pd.to_timedelta(rng.integers(0, 15000, n_members), unit="D"),
        "gender": rng.choice(["F", "M", "U"], n_members),
        "age": rng.integers(18, 70, n_members).astype(float),
        "region": rng.choice(["浙江", "广东", "上海", "北京"], n_members),
        "channel": rng.choice(["app", "web", "mini"], n_members),
        "marketing_consent": rng.random(n_members) < 0.9,
    })
    n_ev = n_members * 25
    types = list(EVENT_TYPES) + ["mystery"]
    out["events"] = pd.DataFrame({
        "member_id": rng.choice(members, n_ev),
        "occurred_at": (START + pd.to_timedelta(rng.uniform(0, days, n_ev), unit="D")).floor("s"),
        "type": rng.choice(types, n_ev),
        "item_id": [f"i{j:03d}" for j in rng.integers(0, 30, n_ev)],
        "value": rng.random(n_ev),
    })
    out["items"] = items
    return out


def write_store(path, tables: dict[str, pd.DataFrame]):
    """Write tables into a Store folder (conformed by Store.write)."""
    from features.store import Store

    store = Store(path)
    for name, df in tables.items():
        store.write(name, df)
    return store
