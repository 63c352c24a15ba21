"""Cheap column reads from a small DataFrame for the one-member online scoring path.

Why: the recs model reads ~14 columns of a few hundred history rows per request; `df[name].to_numpy(dtype=float,
na_value=…)` costs ~40 µs a column (a Series is built, then the NA-filling path copies), which adds up to most of the
history preparation. Here a column's backing array is taken directly (~2 µs) and converted with plain numpy when it
is a plain numpy dtype; anything else (nullable, Arrow, object, tz-aware) returns None and the caller keeps its
pandas path, so the results are the same for every input (tested against the pandas conversions).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def column_values(df: pd.DataFrame, name: str) -> Any:
    """The array behind column `name` (numpy array or pandas ExtensionArray), without building a Series.

    Uses pandas' internal per-column accessor when present (pandas ≥ 2), else the public `df[name].array`."""
    getter = getattr(df, "_get_column_array", None)
    if getter is not None:
        loc = df.columns.get_loc(name)
        if isinstance(loc, (int, np.integer)):
            return getter(int(loc))
    return df[name].array


def numeric_column(df: pd.DataFrame, name: str, default: float) -> np.ndarray | None:
    """Column `name` as a new float64 array with NaN replaced by `default` (as `Series.to_numpy(dtype=float,
    na_value=default)` does), or None when the column is not a plain numpy number/bool column."""
    values = column_values(df, name)
    if not isinstance(values, np.ndarray) or values.dtype.kind not in "fiub":
        return None
    out = values.astype(np.float64)  # always a copy
    if values.dtype.kind == "f" and not np.isnan(default):
        out[np.isnan(out)] = default
    return out


def datetime_column_us(df: pd.DataFrame, name: str) -> np.ndarray | None:
    """Column `name` as datetime64[us] (NaT kept), or None when it is not a tz-naive numpy datetime column."""
    values = column_values(df, name)
    dtype = getattr(values, "dtype", None)
    if not isinstance(dtype, np.dtype) or dtype.kind != "M":
        return None
    return np.asarray(values).astype("datetime64[us]")


def single_value(values: Any) -> tuple[bool, Any]:
    """(True, v) when every element of a non-empty 1-d array is the same non-null v, else (False, None)."""
    if len(values) == 0:
        return False, None
    first, last = values[0], values[-1]
    if pd.isna(first) or pd.isna(last) or first != last:  # the cheap refusal (a batch of many members)
        return False, None
    if isinstance(values, np.ndarray):
        same = values == first
        all_same = isinstance(same, np.ndarray) and bool(np.all(same))
    else:
        # unique() beats `values == first` ~3× on Arrow strings (no scalar boxing); NA is refused first
        all_same = not bool(pd.isna(values).any()) and len(values.unique()) == 1
    return (True, first) if all_same else (False, None)


def string_array(values: Any) -> Any:
    """`pd.array(values, dtype="string")` without `pd.array`'s dtype dispatch (the same array; ~15 µs less a call,
    three calls per one-member answer)."""
    dtype = pd.StringDtype()
    return dtype.construct_array_type()._from_sequence(values, dtype=dtype)
