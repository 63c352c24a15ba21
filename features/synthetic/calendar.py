"""Calendar of the synthetic shop: daily purchase intensity (618 / 双11 peaks, weekdays, Spring Festival) and
hour-of-day profiles per persona. Pure functions of the dates: no randomness, so oracles can recompute them.
"""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

# Chinese New Year (Spring Festival) dates: logistics pause around them, so shopping dips.
CNY_DATES: tuple[str, ...] = (
    "2018-02-16", "2019-02-05", "2020-01-25", "2021-02-12", "2022-02-01", "2023-01-22", "2024-02-10",
    "2025-01-29", "2026-02-17", "2027-02-06", "2028-01-26", "2029-02-13", "2030-02-03",
)
CNY_FACTOR = 0.55          # multiplier on days CNY-10 .. CNY+7
WEEKDAY_FACTORS = np.array([0.93, 0.94, 0.96, 0.98, 1.00, 1.08, 1.11])  # Monday .. Sunday
PEAK_THRESHOLD = 1.5        # a day whose promotion factor is >= this is a "peak day" (bigger baskets, more discounts)

# Deal sensitivity groups: exponent applied to the promotion factor (not to weekday / CNY factors).
DEAL_EXPONENTS = np.array([0.5, 1.0, 1.5])
DEAL_SHARES = np.array([0.30, 0.45, 0.25])

# Personas and their hour-of-day shopping profiles (relative weights for hours 0..23).
PERSONAS: tuple[str, ...] = ("office_worker", "student", "parent", "retiree")
PERSONA_SHARES = np.array([0.45, 0.15, 0.25, 0.15])
HOUR_PROFILES = np.array([
    # 0    1    2    3    4    5    6    7    8    9   10   11   12   13   14   15   16   17   18   19   20   21   22   23
    [1.0, 0.5, 0.2, 0.1, 0.1, 0.1, 0.3, 0.8, 1.2, 1.3, 1.4, 1.6, 2.6, 2.3, 1.4, 1.3, 1.3, 1.5, 2.0, 3.6, 4.2, 4.0, 2.8, 1.8],
    [2.4, 1.8, 0.9, 0.3, 0.1, 0.1, 0.1, 0.3, 0.6, 0.9, 1.2, 1.4, 1.8, 1.6, 1.5, 1.6, 1.8, 2.0, 2.2, 2.6, 3.0, 3.6, 3.9, 3.4],
    [0.6, 0.3, 0.1, 0.1, 0.1, 0.2, 0.6, 1.0, 1.6, 2.6, 2.8, 2.2, 1.6, 2.2, 2.4, 1.8, 1.2, 1.0, 1.0, 1.6, 2.8, 3.2, 2.4, 1.2],
    [0.2, 0.1, 0.1, 0.1, 0.2, 0.6, 1.6, 2.8, 3.4, 3.6, 3.2, 2.4, 1.6, 1.4, 2.2, 2.6, 2.4, 1.8, 1.4, 1.6, 1.8, 1.2, 0.6, 0.3],
])


def day_range(start: str | dt.date, end: str | dt.date) -> np.ndarray:
    """Days from `start` to `end` inclusive as datetime64[D]."""
    s, e = np.datetime64(str(start), "D"), np.datetime64(str(end), "D")
    if e < s:
        raise ValueError(f"end {end} is before start {start}")
    return np.arange(s, e + np.timedelta64(1, "D"), dtype="datetime64[D]")


def promotion_factors(days: np.ndarray) -> np.ndarray:
    """Promotion multiplier per day (1 on ordinary days).

    618: ramps 1.0 -> 1.8 over June 1-17, 5.0 on June 18, 1.3 on June 19-20.
    双11: pre-sale ramps 1.3 -> 2.0 over Oct 20 - Nov 10, 9.0 on Nov 11, 1.4 on Nov 12-13.
    双12: 2.5 on Dec 12. 女神节: 1.6 on Mar 8.
    """
    idx = pd.DatetimeIndex(days.astype("datetime64[ns]"))
    m, d = idx.month.to_numpy(), idx.day.to_numpy()
    f = np.ones(len(days))
    june = m == 6
    f[june & (d <= 17)] = 1.0 + 0.8 * (d[june & (d <= 17)] - 1) / 16
    f[june & (d == 18)] = 5.0
    f[june & ((d == 19) | (d == 20))] = 1.3
    pre = ((m == 10) & (d >= 20)) | ((m == 11) & (d <= 10))
    doy = idx.dayofyear.to_numpy()
    nov11 = np.array([pd.Timestamp(year=y, month=11, day=11).dayofyear for y in idx.year.to_numpy()]) if len(days) else doy
    prog = np.clip(1.0 - (nov11 - doy) / 22.0, 0.0, 1.0)
    f[pre] = 1.3 + 0.7 * prog[pre]
    f[(m == 11) & (d == 11)] = 9.0
    f[(m == 11) & ((d == 12) | (d == 13))] = 1.4
    f[(m == 12) & (d == 12)] = 2.5
    f[(m == 3) & (d == 8)] = 1.6
    return f


def cny_factors(days: np.ndarray) -> np.ndarray:
    """CNY_FACTOR on days within [CNY - 10, CNY + 7] of a Spring Festival, else 1."""
    f = np.ones(len(days))
    for c in CNY_DATES:
        cd = np.datetime64(c, "D")
        f[(days >= cd - np.timedelta64(10, "D")) & (days <= cd + np.timedelta64(7, "D"))] = CNY_FACTOR
    return f


def seasonal_weights(days: np.ndarray, deal_exponent: float = 1.0) -> np.ndarray:
    """Relative purchase intensity per day: weekday factor x CNY factor x promotion factor ** deal_exponent.

    A member with purchase rate r (orders per day at weight 1) places Poisson(r * w_d) base orders on an active day d.
    """
    days = np.asarray(days, dtype="datetime64[D]")
    dow = (days.astype("int64") + 3) % 7  # 1970-01-01 was a Thursday -> Monday = 0
    return WEEKDAY_FACTORS[dow] * cny_factors(days) * promotion_factors(days) ** float(deal_exponent)


def hour_cdf() -> np.ndarray:
    """Cumulative hour-of-day distributions per persona, shape (personas, 24), last column 1."""
    p = HOUR_PROFILES / HOUR_PROFILES.sum(axis=1, keepdims=True)
    c = np.cumsum(p, axis=1)
    c[:, -1] = 1.0
    return c


def sample_seconds_of_day(rng: np.random.Generator, persona: np.ndarray) -> np.ndarray:
    """Second of the day (0..86399) for each row, hour drawn from the row's persona profile, minute/second uniform."""
    cdf = hour_cdf()
    n_hours = cdf.shape[1]
    keys = (np.arange(cdf.shape[0])[:, None] + cdf).ravel()  # persona p occupies (p, p + 1]
    u = np.minimum(rng.random(len(persona)), 1.0 - 1e-12)
    flat = np.searchsorted(keys, persona + u, side="right")
    hour = flat - persona.astype(np.int64) * n_hours
    np.clip(hour, 0, n_hours - 1, out=hour)
    return hour * 3600 + rng.integers(0, 3600, len(persona))
