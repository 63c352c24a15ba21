"""Demographic and birthday features from the members table (registration data known before T)."""
from __future__ import annotations

from features.definitions import Family, FeatureSpec


def families(t: str, tables: frozenset[str]) -> list[Family]:
    F = FeatureSpec
    feats = (
        F("age", f"CASE WHEN mem.birthday IS NOT NULL THEN DATE_DIFF('day', mem.birthday, {t}) / 365.25 "
                 "ELSE mem.age END", "numeric", "demographics", "age in years at T (from birthday, else age)"),
        F("gender", "mem.gender", "categorical", "demographics", "F / M / U"),
        F("region", "mem.region", "categorical", "demographics", "province or region"),
        F("channel", "mem.channel", "categorical", "demographics", "registration channel"),
        F("marketing_consent", "CASE WHEN mem.marketing_consent THEN 1 WHEN NOT mem.marketing_consent THEN 0 END",
          "numeric", "demographics", "1 if the member accepts marketing"),
        F("days_to_birthday",
          f"CASE WHEN mem.birthday IS NOT NULL THEN "
          f"(((DAYOFYEAR(mem.birthday) - DAYOFYEAR({t})) % 365) + 365) % 365 END",
          "numeric", "calendar", "days until the next birthday (day-of-year arithmetic; ±1 day around 29 Feb)"),
    )
    return [Family("members", frozenset({"members"}), (), ("mem",), feats, population=("mem",))]
