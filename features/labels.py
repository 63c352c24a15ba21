"""Labels at a cutoff T (DESIGN §4): churn, LTV, time to next order (with censoring), and items bought next.

Labels use rows in [T, T+H) only (and, for the population, the fact of a paid order before T). A label window that
runs past the end of the data would silently understate every label, so by default it is an error.
"""
from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from features.definitions.labels import data_end_sql, items_bought_plan, label_plan
from features.engine import Engine, Plan, TableSource, as_timestamp, open_engine, sql_literal_timestamp

DEFAULT_CHURN_HORIZON = 90
DEFAULT_LTV_HORIZON = 365
DEFAULT_TIMING_HORIZON = 180
LABEL_COLUMNS: tuple[str, ...] = ("churn", "ltv", "days_to_next", "next_observed")


class LabelWindowError(ValueError):
    """A label window [T, T+H) is not fully covered by the data."""


def _check_horizon(name: str, value: int) -> int:
    if not isinstance(value, (int,)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive whole number of days, got {value!r}")
    return int(value)


def data_end(eng: Engine) -> tuple[pd.Timestamp | None, bool]:
    """(last order timestamp, whether any amount is non-null) of the loaded store."""
    row = eng.run(Plan((), data_end_sql()))
    end = row["data_end"].iloc[0]
    return (None if pd.isna(end) else pd.Timestamp(end)), bool(row["n_amount"].iloc[0] > 0)


def _window_check(end: pd.Timestamp | None, cutoff: pd.Timestamp, horizons: dict[str, int], strict: bool) -> None:
    if not strict or end is None:
        return
    too_long = {k: h for k, h in horizons.items() if cutoff + pd.Timedelta(days=h) > end + pd.Timedelta(days=1)}
    if too_long:
        raise LabelWindowError(
            f"label window(s) {too_long} from cutoff {cutoff.date()} run past the last order in the data "
            f"({end}); use an earlier cutoff or shorter horizons, or accept truncated labels "
            "(strict=False; CLI --allow-truncated-labels)")


def compute_labels(source: TableSource, cutoff: object, *, churn_horizon: int = DEFAULT_CHURN_HORIZON,
                   ltv_horizon: int = DEFAULT_LTV_HORIZON, timing_horizon: int = DEFAULT_TIMING_HORIZON,
                   engine: str | Engine = "duckdb", strict: bool = True) -> pd.DataFrame:
    """Labels at `cutoff` for every member with a paid order line before it.

    Columns: member_id, churn (0/1: no paid order in [T, T+churn_horizon)), ltv (paid spend in [T, T+ltv_horizon)
    net of refund/cancel rows in that window, ≥ 0; null when the store has no amounts, e.g. Taobao UserBehavior),
    days_to_next (days to the first paid order at or after T, = timing_horizon when censored) and next_observed
    (1 if that order falls inside the timing horizon, 0 if censored). Horizons are in `df.attrs`.
    With `strict` (default), a window running past the data's last order raises LabelWindowError.
    """
    t = as_timestamp(cutoff, "cutoff")
    horizons = {"churn_horizon": _check_horizon("churn_horizon", churn_horizon),
                "ltv_horizon": _check_horizon("ltv_horizon", ltv_horizon),
                "timing_horizon": _check_horizon("timing_horizon", timing_horizon)}
    eng, _tables, owned = open_engine(source, engine)
    try:
        end, has_amount = data_end(eng)
        _window_check(end, t, horizons, strict)
        df = eng.run(label_plan(sql_literal_timestamp(t), **horizons))
    finally:
        if owned:
            eng.close()
    df["member_id"] = df["member_id"].astype("string")
    if not has_amount:
        df["ltv"] = float("nan")
    df.attrs.update({"cutoff": t.isoformat(), **horizons})
    return df.reset_index(drop=True)


def items_bought(source: TableSource, cutoff: object, horizon_days: int, *, engine: str | Engine = "duckdb",
                 members: Sequence[str] | None = None) -> pd.DataFrame:
    """(member_id, item_id, n): paid order lines per member and item in [cutoff, cutoff + horizon_days).

    The ground truth for recommendation evaluation. Does not check that the window is covered by the data.
    """
    t = as_timestamp(cutoff, "cutoff")
    h = _check_horizon("horizon_days", horizon_days)
    eng, _tables, owned = open_engine(source, engine, member_ids=members)
    try:
        df = eng.run(items_bought_plan(sql_literal_timestamp(t), h))
    finally:
        if owned:
            eng.close()
    df["member_id"] = df["member_id"].astype("string")
    df["item_id"] = df["item_id"].astype("string")
    df.attrs.update({"cutoff": t.isoformat(), "horizon_days": h})
    return df.reset_index(drop=True)
