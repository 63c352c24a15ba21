"""Cost of serving the recommender its training history (issue 7): `compute_recent_items` and the recs model call
on the 200k-member synthetic store, with the item events (views / carts / favourites, rows for items only seen: what
the ranker is trained on) against orders only (what was served before).

"Orders only" is the same plan without the events table (its order rows are the previous plan's) and the recs call
on those rows without the event columns; "with events" is the current plan. CPU seconds are this process's user+sys
time (DuckDB's threads included), so the figures hold on a loaded machine too; the load average is recorded.

The recs model is fitted here on 5,000 of the store's members (small ALS, a 40-round LightGBM ranker) at the
cutoff: model quality does not change the scoring cost much, the number of history rows and candidates do. The recs
call runs per 50,000-member chunk, as batch scoring does.

Usage: `python -m benchmarks.run recent_items` or `python -m benchmarks.bench_recent_items [--store DIR]`.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable

from benchmarks.common import write_result

ROOT = Path(__file__).resolve().parent.parent
STORE = ROOT / "data" / "bench" / "synthetic_200000_seed7"
AS_OF = "2025-10-01"
CHUNK = 50_000


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, CPU seconds, wall seconds) of fn()."""
    c0, t0 = _cpu(), time.perf_counter()
    out = fn()
    return out, _cpu() - c0, time.perf_counter() - t0


def _model(store: Path, as_of: Any, n_members: int = 5000) -> Any:
    """A recs model with a ranker, fitted on the first `n_members` members of the store."""
    import pandas as pd

    from training.member_pyfunc.recs import RecsModel
    from training.recs.candidates import CandidateConfig, fit_candidates
    from training.recs.ranker import RankerConfig, rank_frame, train_ranker
    from training.recs.train import truth_at

    orders = pd.read_parquet(store / "orders.parquet")
    ids = pd.unique(orders["member_id"])[:n_members]
    events = pd.read_parquet(store / "events.parquet", filters=[("member_id", "in", list(ids))])
    tables = {"orders": orders[orders["member_id"].isin(ids)].reset_index(drop=True), "events": events,
              "items": pd.read_parquet(store / "items.parquet")}
    cfg = CandidateConfig(factors=32, iterations=8)
    cut0 = as_of - pd.Timedelta(days=90)
    fc0 = fit_candidates(tables, cut0, cfg)
    booster, _ = train_ranker([rank_frame(fc0, truth_at(tables, cut0, 60))], None,
                              RankerConfig(num_leaves=15, min_data_in_leaf=20), num_boost_round=40)
    fc = fit_candidates(tables, as_of, cfg)
    fc.art.ranker = booster.model_to_string()
    return RecsModel(fc.art)


def run(store: Path = STORE, as_of: str = AS_OF) -> dict[str, Any]:
    """Rows and CPU seconds of recent items and the recs call, orders only against with events."""
    import numpy as np
    import pandas as pd

    from features.definitions.recent_items import DECAYED_EVENT_COUNTS, EVENT_COUNTS, recent_items_plan
    from features.engine import DuckDBEngine, open_engine, sql_literal_timestamp
    from serving.compose import recommend_frame

    t = pd.Timestamp(as_of)
    load_before = os.getloadavg()[0]
    eng, tables, _ = open_engine(store, DuckDBEngine())
    try:
        lit = sql_literal_timestamp(t)
        old, old_cpu, old_wall = _timed(lambda: eng.run(recent_items_plan(lit, tables - {"events"})))
        new, new_cpu, new_wall = _timed(lambda: eng.run(recent_items_plan(lit, tables)))
    finally:
        eng.close()
    event_cols = [*EVENT_COUNTS, *DECAYED_EVENT_COUNTS, "last_seen_at"]
    old = old[[c for c in old.columns if c not in event_cols]]
    for frame in (old, new):
        for c in ("member_id", "item_id", "category"):
            frame[c] = frame[c].astype("string")
    model = _model(store, t)
    members = pd.read_parquet(store / "members.parquet", columns=["member_id"])["member_id"].astype("string")
    members = members.drop_duplicates().tolist()

    def recs(history: pd.DataFrame) -> int:
        rows = 0
        by_member = history.groupby("member_id", sort=False).indices
        for s in range(0, len(members), CHUNK):
            ids = members[s:s + CHUNK]
            pos = [by_member[m] for m in ids if m in by_member]
            h = history.iloc[np.concatenate(pos)] if pos else history.iloc[:0]
            rows += len(recommend_frame(model, h.reset_index(drop=True), ids, 10, t))
        return rows

    old_rows, old_recs_cpu, old_recs_wall = _timed(lambda: recs(old))
    new_rows, new_recs_cpu, new_recs_wall = _timed(lambda: recs(new))
    figures = {
        "members": len(members),
        "recent_items_rows_orders_only": len(old), "recent_items_rows_with_events": len(new),
        "recent_items_seen_only_rows": int((new["n_bought"] == 0).sum()),
        "recent_items_cpu_s_orders_only": round(old_cpu, 2), "recent_items_cpu_s_with_events": round(new_cpu, 2),
        "recent_items_wall_s_orders_only": round(old_wall, 2), "recent_items_wall_s_with_events": round(new_wall, 2),
        "recs_cpu_s_orders_only": round(old_recs_cpu, 2), "recs_cpu_s_with_events": round(new_recs_cpu, 2),
        "recs_wall_s_orders_only": round(old_recs_wall, 2), "recs_wall_s_with_events": round(new_recs_wall, 2),
        "recs_rows_orders_only": old_rows, "recs_rows_with_events": new_rows,
        "load_average_before": round(load_before, 1), "load_average_after": round(os.getloadavg()[0], 1),
    }
    units = {k: ("s" if k.endswith("_s") or "_s_" in k else "rows") for k in figures}
    units.update({"members": "members", "load_average_before": "1-min load average",
                  "load_average_after": "1-min load average"})
    notes = {"store": str(store.relative_to(ROOT) if store.is_relative_to(ROOT) else store), "as_of": as_of,
             "cpu_is": "user+sys CPU seconds of this process (DuckDB threads included)",
             "recs_model": "fitted on 5,000 members of the store (ALS 32 factors, 40-round ranker); recs called "
                           f"per {CHUNK:,}-member chunk as batch scoring does"}
    return {"figures": figures, "units": units, "notes": notes}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", type=Path, default=STORE)
    p.add_argument("--as-of", default=AS_OF)
    p.add_argument("--no-write", action="store_true", help="print the figures only")
    args = p.parse_args(argv or [])
    if not (args.store / "orders.parquet").exists():
        raise SystemExit(f"store {args.store} not found (generate it: member-ml generate --members 200000 --seed 7)")
    res = run(args.store, args.as_of)
    print(json.dumps(res["figures"], indent=1))
    if not args.no_write:
        print(f"wrote {write_result('recent_items', figures=res['figures'], units=res['units'], notes=res['notes'], merge=False)}")


if __name__ == "__main__":
    main(sys.argv[1:])
