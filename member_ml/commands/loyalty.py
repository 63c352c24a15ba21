"""`member-ml loyalty`: every member's tier, points and segments as of a date (loyalty rules from YAML)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("loyalty")(loyalty_command)


def loyalty_command(
    store: Annotated[Path, typer.Option("--store", help="Store folder (orders.parquet; events/members optional).")],
    as_of: Annotated[str, typer.Option("--as-of", help="Date of the state: rows strictly before it are used.")],
    config: Annotated[Path | None, typer.Option("--config", help="Loyalty rules YAML (default: the shipped "
                                                "six-tier ladder; see loyalty/configs/).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Parquet file to write (default: "
                                             "<store>/loyalty_<as-of>.parquet).")] = None,
) -> None:
    """Replay the loyalty rules for every member: tier, benefits, points ledger, value/lifecycle segments."""
    import time

    import pandas as pd
    from member_ml.console import console

    from features.store import Store, StoreError, atomic_write_parquet
    from loyalty.batch import member_state
    from loyalty.config import LoyaltyConfigError, load_config
    from loyalty.frames import LoyaltyInputError
    from member_ml.console import fail, table

    try:
        ts = pd.Timestamp(as_of)
    except (ValueError, TypeError):
        fail(f"--as-of {as_of!r} is not a date (use YYYY-MM-DD)")
    try:
        cfg = load_config(config)
    except LoyaltyConfigError as e:
        fail(str(e))
    try:
        s = Store(store).check()
    except StoreError as e:
        fail(str(e))
    con = console()
    t0 = time.perf_counter()
    try:
        with con.status("reading the store…"):
            orders = s.read("orders")
            events = s.read_optional("events")
            members = s.read_optional("members")
        with con.status(f"replaying loyalty rules ({cfg.name}) as of {ts.date()} for all members…"):
            df = member_state(orders, events, members, ts, cfg)
    except (LoyaltyInputError, ValueError) as e:
        fail(str(e))
    secs = time.perf_counter() - t0
    path = out or (s.path / f"loyalty_{ts.date().isoformat()}.parquet")
    atomic_write_parquet(df, path)

    tiers = [t.name for t in cfg.ladder.tiers]
    by_tier = []
    grp = df.assign(tier=df["tier"].fillna("unknown")).groupby("tier", sort=False)
    for name in tiers + ["unknown"]:
        if name not in grp.groups:
            continue
        g = grp.get_group(name)
        by_tier.append({"tier": name, "members": len(g), "share": f"{len(g) / max(len(df), 1):.1%}",
                        "discount": g["discount_rate"].iloc[0], "mean spend": round(float(g["qualifying_spend"].mean()), 1)
                        if g["qualifying_spend"].notna().any() else None,
                        "points balance": int(g["points_balance"].sum()),
                        "expiring 30d": int(g["points_expiring_30d"].sum())})
    con.print(table(f"tiers ({cfg.name}) as of {ts.date()}", by_tier))
    seg = (df.groupby(["value_segment", "lifecycle_segment"], sort=True).size().rename("members").reset_index())
    strat = df.drop_duplicates("value_segment").set_index("value_segment")["strategy"]
    rows = [{"value": r.value_segment, "lifecycle": r.lifecycle_segment, "members": int(r.members),
             "strategy": strat.get(r.value_segment)} for r in seg.itertuples(index=False)]
    con.print(table("segments", rows))
    totals = {"members": len(df), "points earned": int(df["points_earned"].sum()),
              "points redeemed": int(df["points_redeemed"].sum()),
              "points reversed by refunds": int(df["points_reversed"].sum()),
              "points expired": int(df["points_expired"].sum()), "points balance": int(df["points_balance"].sum()),
              "points expiring within 30 days": int(df["points_expiring_30d"].sum()),
              "redemptions rejected": int(df["redemptions_rejected"].sum()),
              "tier unknown (no amounts)": int(df["tier"].isna().sum()), "seconds": round(secs, 2)}
    con.print(table("points and totals", [{"": k, "value": v} for k, v in totals.items()]))
    con.print(f"written [bold]{path}[/]")
