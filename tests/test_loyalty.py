"""Loyalty rules: worked examples from the source documents, config validation, quotes, edge cases, CLI."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from loyalty.batch import member_state
from loyalty.config import LoyaltyConfigError, load_config, parse_config, shipped_configs
from loyalty.frames import LoyaltyInputError
from loyalty.member import member_state as one_member
from loyalty.quote import Cart, quote

AS_OF = "2024-12-01"
FOUR = shipped_configs()["four_tier"]
ORDERS_CFG = shipped_configs()["order_count"]


def orders(*rows: tuple) -> pd.DataFrame:
    """rows: (order_id, member_id, ordered_at, amount[, category[, status[, item_id]]])."""
    out = []
    for r in rows:
        oid, mid, at, amount = r[:4]
        out.append({"order_id": oid, "member_id": mid, "ordered_at": pd.Timestamp(at), "amount": amount,
                    "category": r[4] if len(r) > 4 else "服饰", "status": r[5] if len(r) > 5 else "paid",
                    "item_id": r[6] if len(r) > 6 else f"i-{oid}"})
    return pd.DataFrame(out)


def events(*rows: tuple) -> pd.DataFrame:
    return pd.DataFrame([{"member_id": m, "occurred_at": pd.Timestamp(at), "type": ty,
                          "value": (r[0] if r else None)} for m, at, ty, *r in rows])


def state(o: pd.DataFrame, ev: pd.DataFrame | None = None, mem: pd.DataFrame | None = None, as_of: str = AS_OF,
          config=None) -> pd.DataFrame:
    return member_state(o, ev, mem, as_of, config).set_index("member_id")


# -- worked examples of the documents ------------------------------------------------------------------------------

def test_350_yuan_earns_30_points() -> None:
    s = state(orders(("o1", "a", "2024-05-01", 350.0)))
    assert s.loc["a", "points_earned"] == 30
    assert s.loc["a", "points_balance"] == 30


def test_points_floor_per_order_not_per_line() -> None:
    o = pd.concat([orders(("o1", "a", "2024-05-01", 60.0)), orders(("o1", "a", "2024-05-01", 60.0, "服饰", "paid", "i2"))])
    assert state(o).loc["a", "points_earned"] == 10  # 120 yuan in one order: one full 100


def test_1000_yuan_is_diamond_in_six_tier_ladder() -> None:
    s = state(orders(("o1", "a", "2024-05-01", 1000.0), ("o2", "b", "2024-05-01", 999.99),
                     ("o3", "c", "2024-05-01", 10000.0), ("o4", "d", "2024-05-01", 99.0)))
    assert s.loc["a", "tier"] == "钻石" and s.loc["a", "tier_rank"] == 3
    assert s.loc["b", "tier"] == "金牌"
    assert s.loc["b", "spend_to_next_tier"] == pytest.approx(0.01)
    assert s.loc["c", "tier"] == "超级买家" and pd.isna(s.loc["c", "next_tier"])
    assert pd.isna(s.loc["c", "spend_to_next_tier"])
    assert s.loc["d", "tier"] == "普通" and s.loc["d", "next_tier"] == "银牌"
    assert s.loc["d", "spend_to_next_tier"] == pytest.approx(1.0)


def test_2100_yuan_over_6_orders_is_vip_with_85_discount_in_four_tier() -> None:
    o = orders(*[(f"o{i}", "a", f"2024-0{i + 1}-10", 350.0) for i in range(6)])
    s = state(o, config=load_config(FOUR))
    assert s.loc["a", "qualifying_spend"] == pytest.approx(2100.0)
    assert s.loc["a", "qualifying_orders"] == 6
    assert s.loc["a", "tier"] == "VIP"
    assert s.loc["a", "discount_rate"] == pytest.approx(0.85)
    assert bool(s.loc["a", "priority_shipping"])
    # 2,100 yuan over only 4 orders: spend is enough, orders are not → 高级 (9折), 1 order to VIP
    s4 = state(orders(*[(f"o{i}", "b", f"2024-0{i + 1}-10", 525.0) for i in range(4)]), config=load_config(FOUR))
    assert s4.loc["b", "tier"] == "高级" and s4.loc["b", "discount_rate"] == pytest.approx(0.90)
    assert s4.loc["b", "orders_to_next_tier"] == 1 and s4.loc["b", "spend_to_next_tier"] == 0


def test_supreme_vip_needs_annual_spend_above_5000_and_frequent_interactions() -> None:
    cfg = load_config(FOUR)
    o = orders(*[(f"o{i}", "a", f"2024-0{i + 1}-10", 1000.0) for i in range(5)],
               ("p1", "a", "2024-07-01", 0.01),
               *[(f"q{i}", "b", f"2024-0{i + 1}-10", 1000.0) for i in range(6)])
    ev = events(*[("a", f"2024-08-{d:02d}", "review") for d in range(1, 13)],
                *[("b", f"2024-08-{d:02d}", "share") for d in range(1, 12)])
    s = state(o, ev, config=cfg)
    assert s.loc["a", "tier"] == "至尊VIP"        # 5000.01 > 5000 and 12 reviews
    assert s.loc["b", "tier"] == "VIP"            # 6000 but only 11 shares
    assert s.loc["b", "interactions_to_next_tier"] == 1
    # exactly 5000 is not "above 5000"
    o2 = orders(*[(f"o{i}", "c", f"2024-0{i + 1}-10", 1000.0) for i in range(5)])
    ev2 = events(*[("c", f"2024-08-{d:02d}", "review") for d in range(1, 13)])
    s2 = state(o2, ev2, config=cfg)
    assert s2.loc["c", "tier"] == "VIP" and s2.loc["c", "spend_to_next_tier"] == pytest.approx(0.01)


def test_appliance_order_gets_its_bonus() -> None:
    s = state(orders(("o1", "a", "2024-05-01", 350.0, "家电"), ("o2", "b", "2024-05-01", 350.0, "美妆")))
    assert s.loc["a", "points_earned"] == 35
    assert s.loc["b", "points_earned"] == 30


def test_activity_points_caps_and_profile_once() -> None:
    ev = events(("a", "2024-05-01 08:00", "checkin"), ("a", "2024-05-01 09:00", "checkin"),  # 1 per day
                ("a", "2024-05-02 08:00", "checkin"),
                ("a", "2024-05-03", "profile_completed"), ("a", "2024-06-03", "profile_completed"),  # once: 100
                ("a", "2024-05-04", "share"), ("a", "2024-05-04", "review"), ("a", "2024-05-04", "view"))
    s = state(orders(("o1", "b", "2024-05-01", 1.0)), ev)
    assert s.loc["a", "points_earned"] == 1 + 1 + 100 + 5 + 10


def test_birthday_month_and_tier_multipliers() -> None:
    mem = pd.DataFrame({"member_id": ["a", "b"], "birthday": pd.to_datetime(["1990-05-20", "1990-01-02"])})
    o = orders(("o1", "a", "2024-05-01", 350.0), ("o2", "b", "2024-05-01", 350.0),
               # c reaches 超级买家 (×2) with its first order; the second earns double
               ("c1", "c", "2024-01-01", 10000.0), ("c2", "c", "2024-02-01", 350.0))
    s = state(o, mem=mem)
    assert s.loc["a", "points_earned"] == 60   # birthday month ×2
    assert s.loc["b", "points_earned"] == 30
    assert s.loc["c", "points_earned"] == 1000 + 60


def test_redemption_beyond_balance_is_rejected_with_reason() -> None:
    o = orders(("o1", "a", "2024-05-01", 350.0))
    ev = events(("a", "2024-05-02", "redeem", 20.0), ("a", "2024-05-03", "redeem", 20.0),
                ("a", "2024-05-04", "redeem", -3.0))
    s = state(o, ev)
    assert s.loc["a", "points_redeemed"] == 20
    assert s.loc["a", "points_balance"] == 10
    assert s.loc["a", "redemptions_rejected"] == 2
    one = one_member(o, ev, None, AS_OF)
    rejected = [e for e in one.statement if e.status == "rejected"]
    assert any("exceeds the balance of 10" in (e.reason or "") for e in rejected)
    assert any("positive whole number" in (e.reason or "") for e in rejected)


def test_refund_reverses_points_and_spend_and_tier() -> None:
    o = orders(("o1", "a", "2024-05-01", 600.0, "家电"), ("o2", "a", "2024-05-02", 500.0),
               ("o1", "a", "2024-06-01", 600.0, "家电", "refunded"))
    s = state(o)
    assert s.loc["a", "points_earned"] == 65 + 60  # o2 placed as 金牌 (600 spent): ×1.2
    assert s.loc["a", "points_reversed"] == 65
    assert s.loc["a", "points_balance"] == 60
    assert s.loc["a", "qualifying_spend"] == pytest.approx(500.0)
    assert s.loc["a", "tier"] == "金牌"  # 1100 → 钻石 before the refund, 500 after
    before = state(o, as_of="2024-05-20")
    assert before.loc["a", "tier"] == "钻石"


def test_partial_refund_reverses_the_points_the_order_loses() -> None:
    o = orders(("o1", "a", "2024-05-01", 250.0), ("o1", "a", "2024-05-01", 100.0, "家电", "paid", "tv"),
               ("o1", "a", "2024-05-09", 100.0, "家电", "refunded", "tv"))
    s = state(o)
    # 350 + appliance line → 30 + 5; refunding the appliance line leaves 250 → 20
    assert s.loc["a", "points_earned"] == 35
    assert s.loc["a", "points_reversed"] == 15
    assert s.loc["a", "points_balance"] == 20


def _pending_cfg(days: int = 7):
    base = load_config().model_dump()
    base["points"]["pending_days"] = days
    return parse_config(base)


def test_pending_points_are_credited_after_the_confirmation_window() -> None:
    """pending_days = 7: a 350-yuan order placed on May 1 is pending (30 points) until May 8, then balance; a
    full refund inside the window removes the pending points without any reversal. Both paths agree."""
    cfg = _pending_cfg(7)
    o = orders(("o1", "a", "2024-05-01", 350.0), ("o2", "b", "2024-05-01", 350.0),
               ("o2", "b", "2024-05-03", 350.0, "服饰", "refunded"))
    during, after = state(o, as_of="2024-05-05", config=cfg), state(o, as_of="2024-05-09", config=cfg)
    assert (during.loc["a", "points_pending"], during.loc["a", "points_balance"], during.loc["a", "points_earned"]) \
        == (30, 0, 0)
    assert (after.loc["a", "points_pending"], after.loc["a", "points_balance"], after.loc["a", "points_earned"]) \
        == (0, 30, 30)
    for s in (during, after):  # refunded inside the window: never credited, never reversed
        assert (s.loc["b", "points_pending"], s.loc["b", "points_balance"], s.loc["b", "points_reversed"]) == (0, 0, 0)
    one = one_member(o, None, None, "2024-05-05", cfg, member_id="a")
    assert (one.points_pending, one.points_balance) == (30, 0)
    # the default (the documents say nothing about a window) credits at once
    assert state(o, as_of="2024-05-02").loc["a", "points_balance"] == 30
    assert load_config().points.pending_days == 0


def test_expiry_first_earned_first_expired_and_expiring_soon() -> None:
    o = orders(("o1", "a", "2023-01-10", 300.0), ("o2", "a", "2023-06-10", 200.0), ("o3", "a", "2023-12-20", 100.0))
    ev = events(("a", "2023-07-01", "redeem", 40.0))
    s = state(o, ev, as_of="2024-06-01")
    # the redemption of 40 takes Jan's 30 first, then 10 of June's 20; December's order (as 金牌, ×1.2) earned 12
    assert s.loc["a", "points_expired"] == 0
    assert s.loc["a", "points_balance"] == 10 + 12
    assert s.loc["a", "points_expiring_30d"] == 10  # June's remaining 10 expire on 2024-06-10
    later = state(o, ev, as_of="2024-07-01")
    assert later.loc["a", "points_expired"] == 10 and later.loc["a", "points_balance"] == 12


def test_only_rows_before_as_of_count() -> None:
    o = orders(("o1", "a", "2024-05-01", 350.0), ("o2", "a", "2024-12-01", 5000.0), ("o3", "b", "2025-01-01", 10.0))
    s = state(o, as_of="2024-12-01")
    assert s.loc["a", "points_earned"] == 30 and s.loc["a", "tier"] == "银牌"
    assert "b" not in s.index


def test_every_member_of_every_table_gets_a_row() -> None:
    mem = pd.DataFrame({"member_id": ["m", "late"], "joined_at": pd.to_datetime(["2024-01-01", "2025-01-01"])})
    s = state(orders(("o1", "a", "2024-05-01", 1.0)), events(("e", "2024-02-01", "view")), mem)
    assert sorted(s.index) == ["a", "e", "m"]
    assert s.loc["m", "lifecycle_segment"] == "churned" and s.loc["m", "tier"] == "普通"


def test_missing_amounts_make_spend_tiers_unknown_not_a_crash() -> None:
    o = orders(("o1", "a", "2024-05-01", None), ("o2", "a", "2024-05-02", None), ("o3", "b", "2024-05-01", 200.0),
               ("o4", "c", "2024-05-01", None), ("o5", "c", "2024-05-02", 20000.0))
    s = state(o)
    assert pd.isna(s.loc["a", "tier"]) and pd.isna(s.loc["a", "tier_rank"])
    assert "spend unknown" in s.loc["a", "tier_reason"]
    assert pd.isna(s.loc["a", "qualifying_spend"]) and s.loc["a", "points_earned"] == 0
    assert s.loc["b", "tier"] == "银牌"
    assert s.loc["c", "tier"] == "超级买家"  # known spend already meets the top bar
    assert s.loc["a", "value_segment"] == "mid"  # by order count when amounts are unknown (2 orders)
    # the order-count ladder works without prices
    s2 = state(o, config=load_config(ORDERS_CFG))
    assert s2.loc["a", "tier"] == "普通" and s2.loc["a", "orders_to_next_tier"] == 8


def test_order_count_ladder() -> None:
    o = orders(*[(f"o{i}", "a", pd.Timestamp("2024-01-01") + pd.Timedelta(days=i), 10.0) for i in range(21)],
               ("o0", "a", "2024-03-01", 10.0, "服饰", "refunded"))
    s = state(o, config=load_config(ORDERS_CFG))
    assert s.loc["a", "qualifying_orders"] == 20 and s.loc["a", "tier"] == "金牌"
    assert s.loc["a", "orders_to_next_tier"] == 10


def test_rolling_window_and_grace_downgrade() -> None:
    base = load_config(FOUR).model_dump()
    base["ladder"]["window"] = "rolling_12m"
    base["ladder"]["downgrade"] = {"policy": "grace", "grace_days": 60}
    cfg = parse_config(base)
    o = orders(*[(f"o{i}", "a", f"2023-0{i + 1}-05", 500.0) for i in range(5)])
    s_in = state(o, as_of="2024-01-04", config=cfg)
    assert s_in.loc["a", "tier"] == "VIP"
    # 2024-01-06: the Jan 2023 order left the window (4 orders, 2000): still VIP on spend, not on orders → grace
    assert state(o, as_of="2024-01-06", config=cfg).loc["a", "tier"] == "VIP"
    assert state(o, as_of="2024-03-01", config=cfg).loc["a", "tier"] == "VIP"    # within 60 days of losing it
    assert state(o, as_of="2024-03-10", config=cfg).loc["a", "tier"] == "高级"  # grace over
    base["ladder"]["downgrade"] = {"policy": "never"}
    assert state(o, as_of="2026-01-01", config=parse_config(base)).loc["a", "tier"] == "VIP"
    base["ladder"]["downgrade"] = {"policy": "immediate"}
    assert state(o, as_of="2024-01-06", config=parse_config(base)).loc["a", "tier"] == "高级"


def test_calendar_year_window() -> None:
    base = load_config().model_dump()
    base["ladder"]["window"] = "calendar_year"
    cfg = parse_config(base)
    o = orders(("o1", "a", "2023-12-31 23:00", 1000.0), ("o2", "a", "2024-01-02", 100.0))
    assert state(o, as_of="2023-12-31 23:30", config=cfg).loc["a", "tier"] == "钻石"
    assert state(o, as_of="2024-03-01", config=cfg).loc["a", "tier"] == "银牌"


def test_segments_and_strategy() -> None:
    mem = pd.DataFrame({"member_id": ["n"], "joined_at": pd.to_datetime(["2024-11-20"])})
    o = orders(("h1", "h", "2024-10-01", 2500.0), ("m1", "m", "2024-06-01", 600.0), ("l1", "l", "2023-01-01", 50.0))
    s = state(o, mem=mem)
    assert s.loc["h", "value_segment"] == "high" and s.loc["h", "strategy"] == "exclusive_service"
    assert s.loc["h", "lifecycle_segment"] == "active"
    assert s.loc["m", "value_segment"] == "mid" and s.loc["m", "strategy"] == "points_and_coupons"
    assert s.loc["m", "lifecycle_segment"] == "churned"  # 183 days > 180
    assert s.loc["l", "value_segment"] == "low" and s.loc["l", "strategy"] == "content_and_recommendations"
    assert s.loc["n", "lifecycle_segment"] == "new"


def test_duplicate_rows_count_once() -> None:
    o = orders(("o1", "a", "2024-05-01", 350.0))
    ev = events(("a", "2024-05-02", "redeem", 10.0))
    s1 = state(o, ev)
    s2 = state(pd.concat([o, o, o]), pd.concat([ev, ev]))
    pd.testing.assert_frame_equal(s1, s2)


def test_input_errors_name_the_column() -> None:
    o = orders(("o1", "a", "2024-05-01", 350.0))
    with pytest.raises(LoyaltyInputError, match="orders.amount"):
        member_state(o.assign(amount=-1.0), None, None, AS_OF)
    with pytest.raises(LoyaltyInputError, match="missing required column.*ordered_at"):
        member_state(o.drop(columns="ordered_at"), None, None, AS_OF)
    with pytest.raises(LoyaltyInputError, match="orders.status"):
        member_state(o.assign(status="lost"), None, None, AS_OF)
    with pytest.raises(LoyaltyInputError, match="events: missing.*type"):
        member_state(o, pd.DataFrame({"member_id": ["a"], "occurred_at": [pd.Timestamp("2024-01-01")]}), None, AS_OF)


# -- config ---------------------------------------------------------------------------------------------------------

def test_shipped_configs_load() -> None:
    assert set(shipped_configs()) >= {"default", "four_tier", "order_count"}
    default = load_config()
    assert default.tier_names == ["普通", "银牌", "金牌", "钻石", "皇冠", "超级买家"]
    assert [t.min_spend for t in default.ladder.tiers[1:]] == [100, 500, 1000, 3000, 10000]
    assert load_config(FOUR).tier_names == ["普通", "高级", "VIP", "至尊VIP"]


@pytest.mark.parametrize("mutate, field", [
    (lambda c: c["ladder"]["tiers"][3]["benefits"].update(discount_rate=1.5), "ladder.tiers.3.benefits.discount_rate"),
    (lambda c: c["ladder"]["tiers"][1].update(min_spend=-5), "ladder.tiers.1.min_spend"),
    (lambda c: c["ladder"].update(window="weekly"), "ladder.window"),
    (lambda c: c["ladder"]["tiers"][0].update(min_spend=10), "ladder.tiers"),
    (lambda c: c["ladder"]["tiers"][2].update(name="银牌"), "ladder.tiers"),
    (lambda c: c["ladder"]["tiers"][1].update(spend_above=100), "ladder.tiers.1"),
    (lambda c: c["points"].update(points_per_unit="ten"), "points.points_per_unit"),
    (lambda c: c["points"]["activities"]["checkin"].update(points=-1), "points.activities.checkin.points"),
    (lambda c: c["points"].update(bogus=1), "points.bogus"),
    (lambda c: c["ladder"].update(downgrade={"policy": "grace"}), "ladder.downgrade"),
    (lambda c: c["segments"]["value"].update(mid_spend=5000), "segments.value"),
])
def test_config_errors_name_the_field(tmp_path: Path, mutate, field: str) -> None:
    data = yaml.safe_load(shipped_configs()["default"].read_text(encoding="utf-8"))
    mutate(data)
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(LoyaltyConfigError) as exc:
        load_config(p)
    assert field in str(exc.value) and str(p) in str(exc.value)


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(LoyaltyConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("ladder: [unclosed", encoding="utf-8")
    with pytest.raises(LoyaltyConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n", encoding="utf-8")
    with pytest.raises(LoyaltyConfigError, match="mapping"):
        load_config(bad)


# -- quote and single member ----------------------------------------------------------------------------------------

def test_quote_discount_and_points_with_reasons() -> None:
    cfg = load_config(FOUR)
    o = orders(*[(f"o{i}", "a", f"2024-0{i + 1}-10", 350.0) for i in range(6)])
    mem = pd.DataFrame({"member_id": ["a"], "birthday": pd.to_datetime(["1991-07-04"])})
    st = one_member(o, None, mem, "2024-10-01", cfg)
    assert st.tier == "VIP"
    q = quote(Cart(lines=[{"price": 300.0, "quantity": 2, "category": "美妆"}, {"price": 100.0, "category": "家电"}]),
              st, cfg)
    assert q.subtotal == pytest.approx(700.0) and q.total == pytest.approx(595.0) and q.savings == pytest.approx(105.0)
    assert q.base_points == 50 and q.bonus_points == 5 and q.multiplier == pytest.approx(1.5) and q.points == 82
    assert any("8.5折" in r for r in q.reasons) and any("家电" in r for r in q.reasons)
    bday = quote(Cart(lines=[{"price": 200.0}], at="2024-07-15"), st, cfg)  # 170 paid → 10 points
    assert bday.points == int(10 * 1.5 * 2) and any("birthday" in r for r in bday.reasons)


def test_quote_member_day_price_on_the_configured_day() -> None:
    """Default ladder: 皇冠 (9.2折) has the member-day benefit; on the 8th the member-day rate (0.95) applies on
    top; 金牌 has no member day; other days pay the tier price."""
    cfg = load_config()
    assert cfg.member_day_of_month == 8 and cfg.member_day_discount_rate == pytest.approx(0.95)
    crown = one_member(orders(("o1", "a", "2024-01-10", 3500.0)), None, None, "2024-03-01", cfg)
    gold = one_member(orders(("o1", "b", "2024-01-10", 600.0)), None, None, "2024-03-01", cfg)
    assert crown.tier == "皇冠" and gold.tier == "金牌"
    cart = [{"price": 1000.0}]
    day = quote(Cart(lines=cart, at="2024-03-08"), crown, cfg)
    other = quote(Cart(lines=cart, at="2024-03-09"), crown, cfg)
    assert other.total == pytest.approx(920.0) and other.discount_rate == pytest.approx(0.92)
    assert day.total == pytest.approx(874.0) and day.discount_rate == pytest.approx(0.92 * 0.95)
    assert day.points == int(870 // 100 * 10 * 1.5) and any("member day" in r for r in day.reasons)
    assert not any("member day" in r for r in other.reasons)
    g = quote(Cart(lines=cart, at="2024-03-08"), gold, cfg)
    assert g.total == pytest.approx(1000.0) and not any("member day" in r for r in g.reasons)


def test_single_member_errors() -> None:
    o = orders(("o1", "a", "2024-05-01", 1.0), ("o2", "b", "2024-05-01", 1.0))
    with pytest.raises(LoyaltyInputError, match="exactly one member"):
        one_member(o, None, None, AS_OF)
    with pytest.raises(LookupError, match="no orders"):
        one_member(o, None, None, AS_OF, member_id="zzz")
    assert one_member(o, None, None, AS_OF, member_id="b").member_id == "b"


# -- CLI ------------------------------------------------------------------------------------------------------------

def test_cli_writes_every_member(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from features.store import Store
    from member_ml.cli import app

    store = Store(tmp_path / "store")
    o = orders(("o1", "a", "2024-05-01", 1200.0, "家电"), ("o2", "b", "2024-05-01", 50.0))
    store.write("orders", o)
    store.write("events", events(("c", "2024-05-03", "checkin")))
    out = tmp_path / "loyalty.parquet"
    res = CliRunner().invoke(app, ["loyalty", "--store", str(store.path), "--as-of", "2024-06-01", "--out", str(out)])
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(out)
    assert sorted(df["member_id"]) == ["a", "b", "c"]
    assert df.set_index("member_id").loc["a", "tier"] == "钻石"
    assert "钻石" in res.output and "segments" in res.output
    res2 = CliRunner().invoke(app, ["loyalty", "--store", str(store.path), "--as-of", "2024-06-01",
                                    "--config", str(tmp_path / "missing.yaml")])
    assert res2.exit_code != 0 and "does not exist" in " ".join(res2.output.split())
    res3 = CliRunner().invoke(app, ["loyalty", "--store", str(tmp_path / "nostore"), "--as-of", "2024-06-01"])
    assert res3.exit_code != 0 and "does not exist" in " ".join(res3.output.split())
