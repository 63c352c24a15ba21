"""Business rules applied after ranking (exclusions, allow-list) and the short reason per recommendation.

The rules live in the self-contained serving package (`training/member_pyfunc/recs_rules.py`) because the logged
model applies them at prediction time; this module is their home for training code and users.
"""
from __future__ import annotations

from training.member_pyfunc.recs_rules import RulesConfig, allowed_mask, consumable_flags, reasons

__all__ = ["RulesConfig", "allowed_mask", "consumable_flags", "reasons"]
