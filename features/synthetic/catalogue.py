"""Item catalogue of the synthetic shop: ten categories with lognormal prices, brands, consumables, price tiers and
taste clusters, plus the vectorised samplers that pick items for order lines and events.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from features.contract import ITEM_ID

N_CLUSTERS = 8   # taste clusters (the collaborative-filtering signal: members prefer items of their own cluster)
N_TIERS = 3      # price tiers within a category: budget / mid / premium (by price tercile)
OWN_CLUSTER_SHARE = 0.6  # share of a member's lines drawn from the member's own taste cluster


@dataclass(frozen=True)
class Category:
    name: str
    popularity: float        # base share of lines (Dirichlet base measure)
    price_median: float      # yuan
    price_sigma: float       # lognormal sigma
    consumable_share: float  # share of the category's items that are consumables
    cycle_days: float        # base replenishment cycle for consumables (0: not replenished)
    refund_factor: float     # relative refund propensity
    brands: tuple[str, ...]


CATEGORIES: tuple[Category, ...] = (
    Category("美妆", 0.13, 160, 0.70, 0.80, 50, 0.9, ("完美日记", "花西子", "珀莱雅", "兰蔻", "雅诗兰黛", "欧莱雅", "自然堂", "百雀羚")),
    Category("母婴", 0.08, 130, 0.80, 0.75, 24, 0.8, ("飞鹤", "帮宝适", "花王", "好孩子", "贝亲", "君乐宝")),
    Category("服饰", 0.16, 160, 0.70, 0.00, 0, 2.2, ("优衣库", "太平鸟", "森马", "李宁", "波司登", "海澜之家", "以纯", "雪中飞")),
    Category("数码", 0.07, 480, 1.00, 0.00, 0, 1.2, ("小米", "华为", "苹果", "荣耀", "OPPO", "vivo", "联想", "罗技")),
    Category("家居", 0.10, 90, 0.80, 0.00, 0, 1.0, ("宜家", "网易严选", "无印良品", "富安娜", "罗莱", "南极人")),
    Category("食品", 0.15, 45, 0.60, 0.95, 28, 0.4, ("三只松鼠", "良品铺子", "百草味", "蒙牛", "伊利", "农夫山泉", "五芳斋", "旺旺")),
    Category("个护", 0.12, 55, 0.60, 0.90, 40, 0.6, ("舒肤佳", "海飞丝", "云南白药", "高露洁", "潘婷", "维达", "清风", "飘柔")),
    Category("家电", 0.06, 650, 0.90, 0.00, 0, 1.1, ("美的", "格力", "海尔", "九阳", "苏泊尔", "戴森", "小熊", "飞利浦")),
    Category("图书", 0.05, 45, 0.50, 0.00, 0, 0.5, ("人民文学出版社", "中信出版社", "商务印书馆", "机械工业出版社", "新星出版社", "读客")),
    Category("运动", 0.08, 220, 0.80, 0.00, 0, 1.3, ("李宁", "安踏", "耐克", "阿迪达斯", "特步", "迪卡侬", "361度", "匹克")),
)
CATEGORY_NAMES: tuple[str, ...] = tuple(c.name for c in CATEGORIES)
N_CATEGORIES = len(CATEGORIES)
CONSUMABLE_CATEGORIES: tuple[int, ...] = tuple(i for i, c in enumerate(CATEGORIES) if c.cycle_days > 0)


def id_strings(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """Ids such as M00000042 (prefix + zero-padded number), built as one Arrow buffer: no Python string per row."""
    num = np.asarray(numbers, dtype=np.int64)
    if num.size and (num.min() < 0 or num.max() >= 10**width):
        raise ValueError(f"ids with prefix {prefix!r} need numbers in [0, 10**{width}); got {num.min()}..{num.max()}")
    head = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8)
    row = len(head) + width
    if num.size * row >= 2**31:
        raise ValueError(f"{num.size:,} ids of {row} characters exceed one Arrow string array; generate in chunks")
    buf = np.empty((num.size, row), dtype=np.uint8)
    buf[:, : len(head)] = head
    rest = num.copy()
    for k in range(width - 1, -1, -1):
        buf[:, len(head) + k] = 48 + (rest % 10)
        rest //= 10
    offsets = np.arange(0, (num.size + 1) * row, row, dtype=np.int32)
    return pa.StringArray.from_buffers(num.size, pa.py_buffer(offsets), pa.py_buffer(buf.ravel()))


def items_per_category(n_members: int) -> int:
    """Catalogue size grows with the shop: 48 .. 600 items per category (>= 2 per tier x cluster group)."""
    return int(np.clip(n_members // 100, 48, 600))


@dataclass
class Catalogue:
    """Items and the lookup arrays the samplers need (items sorted by (category, cluster, tier) group)."""

    item_id: pa.Array          # "I000001" ...
    category: np.ndarray       # int category code per item
    cluster: np.ndarray
    tier: np.ndarray
    price: np.ndarray          # list price, yuan
    brand: pa.Array
    consumable: np.ndarray     # bool
    popularity: np.ndarray
    group_keys: np.ndarray     # right end of each item's interval on the line (group + cumulative share within group)
    staple_keys: np.ndarray    # same for consumable items, grouped by category only
    staple_index: np.ndarray   # item index of each staple key
    tier_mean_price: np.ndarray  # (categories, tiers) popularity-weighted mean list price

    @property
    def n(self) -> int:
        return len(self.price)

    def table(self) -> pa.Table:
        return pa.table({
            ITEM_ID: self.item_id,
            "category": pa.array(list(CATEGORY_NAMES)).take(pa.array(self.category)),
            "price": pa.array(self.price, pa.float64()),
            "brand": self.brand,
            "is_consumable": pa.array(self.consumable, pa.bool_()),
        })

    def pick(self, rng: np.random.Generator, category: np.ndarray, cluster: np.ndarray, tier: np.ndarray) -> np.ndarray:
        """Item index per row from its (category, cluster, tier) group, weighted by item popularity."""
        group = (category.astype(np.int64) * N_CLUSTERS + cluster) * N_TIERS + tier
        u = np.minimum(rng.random(len(group)), 1.0 - 1e-9)
        idx = np.searchsorted(self.group_keys, group + u, side="right")
        return np.minimum(idx, self.n - 1)

    def pick_staple(self, rng: np.random.Generator, category: np.ndarray) -> np.ndarray:
        """A consumable item of the category (popularity-weighted): a member's staple for replenishment."""
        u = np.minimum(rng.random(len(category)), 1.0 - 1e-9)
        k = np.searchsorted(self.staple_keys, category.astype(np.int64) + u, side="right")
        return self.staple_index[np.minimum(k, len(self.staple_index) - 1)]


def _group_keys(group: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """For rows sorted by group: group + cumulative share of weight within the group (right ends, last = group+1)."""
    cum = np.cumsum(weight)
    starts = np.r_[0, np.flatnonzero(np.diff(group)) + 1]
    before = np.repeat(np.r_[0.0, cum[starts[1:] - 1]], np.diff(np.r_[starts, len(group)]))
    totals = np.repeat(np.add.reduceat(weight, starts), np.diff(np.r_[starts, len(group)]))
    keys = group + (cum - before) / totals
    ends = np.r_[starts[1:] - 1, len(group) - 1]
    keys[ends] = group[ends] + 1.0
    return keys


def make_catalogue(rng: np.random.Generator, n_members: int) -> Catalogue:
    """Draw the item catalogue; every (category, cluster, tier) group holds at least two items."""
    per = items_per_category(n_members)
    cats, clus, tiers, prices, cons, brand_codes = [], [], [], [], [], []
    brand_names: list[str] = []
    for ci, c in enumerate(CATEGORIES):
        p = np.exp(rng.normal(np.log(c.price_median), c.price_sigma, per))
        p = np.maximum(np.round(p) - 0.1, 1.9)  # shop-style prices: 159.9
        p.sort()
        tier = (np.arange(per) * N_TIERS) // per
        cluster = np.empty(per, dtype=np.int64)
        for t in range(N_TIERS):
            members = np.flatnonzero(tier == t)
            cluster[members] = rng.permutation(len(members)) % N_CLUSTERS
        consumable = rng.random(per) < c.consumable_share
        if c.cycle_days > 0 and consumable.sum() < 5:
            consumable[rng.choice(per, 5, replace=False)] = True
        cats.append(np.full(per, ci))
        clus.append(cluster)
        tiers.append(tier)
        prices.append(p)
        cons.append(consumable)
        brand_codes.append(len(brand_names) + rng.integers(0, len(c.brands), per))
        brand_names.extend(c.brands)
    category = np.concatenate(cats)
    cluster = np.concatenate(clus)
    tier = np.concatenate(tiers)
    price = np.concatenate(prices)
    consumable = np.concatenate(cons)
    brand_code = np.concatenate(brand_codes)
    popularity = np.exp(rng.normal(0.0, 1.1, len(price)))

    group = (category * N_CLUSTERS + cluster) * N_TIERS + tier
    order = np.lexsort((rng.random(len(group)), group))  # sort by group, random order within
    category, cluster, tier, price, consumable, brand_code, popularity, group = (
        a[order] for a in (category, cluster, tier, price, consumable, brand_code, popularity, group))
    group_keys = _group_keys(group.astype(np.float64), popularity)

    staple_index = np.flatnonzero(consumable)
    staple_keys = _group_keys(category[staple_index].astype(np.float64), popularity[staple_index])

    tier_mean = np.zeros((N_CATEGORIES, N_TIERS))
    for ci in range(N_CATEGORIES):
        for t in range(N_TIERS):
            m = (category == ci) & (tier == t)
            tier_mean[ci, t] = np.average(price[m], weights=popularity[m])

    return Catalogue(
        item_id=id_strings("I", np.arange(1, len(price) + 1), 6),
        category=category, cluster=cluster, tier=tier, price=price,
        brand=pa.array(brand_names).take(pa.array(brand_code)),
        consumable=consumable, popularity=popularity, group_keys=group_keys,
        staple_keys=staple_keys, staple_index=staple_index, tier_mean_price=tier_mean,
    )
