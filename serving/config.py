"""Serving configuration: a pydantic model loaded from YAML (serving/serving.yaml), overridable by environment.

Built once when the service starts (never at import) and passed to the parts that need it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from member_ml.settings import project_root

DEFAULT_CONFIG = Path(__file__).resolve().parent / "serving.yaml"
TOKEN_ENV = "MEMBER_ML_SERVING_TOKEN"


class ServingConfigError(ValueError):
    """The serving configuration is missing or invalid (the message names the field)."""


class ServingConfig(BaseModel):
    """What the online service needs: which models, where features and rules come from, and input limits."""

    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(default_factory=lambda: ["churn", "ltv", "timing", "recs"])
    alias: str = "champion"
    online_table: Path | None = Path("data/demo/online.duckdb")
    store: Path | None = Field(Path("data/demo/store"), description="the store the online table was built from "
                               "(loyalty state per member, item catalogue); optional")
    loyalty_config: Path | None = None
    tracking_uri: str | None = None
    models_lock: Path | None = Field(Path("serving/models.lock.yaml"), description="pinned BentoML model tags "
                                     "written by `member-ml serve import`; absent file = resolve aliases in the registry")
    token: str | None = Field(None, repr=False, description="bearer token; None = no authentication")
    max_body_bytes: int = Field(1 << 20, gt=0)
    max_history_rows: int = Field(20_000, gt=0)
    top_n_default: int = Field(10, gt=0)
    top_n_max: int = Field(100, gt=0)
    top_reasons: int = Field(3, gt=0)
    inline_concurrency: int = Field(2, gt=0, description="inline-history requests computed at once (≈ cores)")
    precompute_member_answers: bool = Field(True, description="score every online-table member once at start-up "
                                            "(serving/precompute.py); /score by member_id is then a lookup")
    precompute_max_members: int = Field(200_000, ge=0, description="above this many members, score live")
    precompute_top_n: int = Field(20, gt=0, description="recommendations kept per member (more → live)")
    runtime_fixes: list[Literal["timer_leak", "freeze_heap", "single_thread_native"]] = Field(
        default_factory=lambda: ["timer_leak", "freeze_heap", "single_thread_native"],
        description="serving/runtime.py work-arounds to apply (the benchmark switches them off to measure them)")
    root: Path = Field(default_factory=project_root)

    def resolve(self, p: Path | None) -> Path | None:
        """A configured path, relative ones taken from the project root."""
        if p is None:
            return None
        return p if p.is_absolute() else self.root / p


def load_serving_config(path: Path | None = None, env: dict[str, str] | None = None) -> ServingConfig:
    """Read the YAML (`path`, else MEMBER_ML_SERVING_CONFIG, else the shipped default) and apply env overrides."""
    env = dict(os.environ if env is None else env)
    path = path or Path(env.get("MEMBER_ML_SERVING_CONFIG", DEFAULT_CONFIG))
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise ServingConfigError(f"serving config {path} cannot be read: {e}") from e
    if not isinstance(raw, dict):
        raise ServingConfigError(f"serving config {path} must be a mapping, got {type(raw).__name__}")
    overrides = {
        "token": env.get(TOKEN_ENV) or None,
        "online_table": env.get("MEMBER_ML_ONLINE_TABLE"),
        "store": env.get("MEMBER_ML_STORE"),
        "max_body_bytes": env.get("MEMBER_ML_SERVING_MAX_BODY_BYTES"),
        "loyalty_config": env.get("MEMBER_ML_LOYALTY_CONFIG"),
        "tracking_uri": env.get("MLFLOW_TRACKING_URI"),
        "models_lock": env.get("MEMBER_ML_SERVING_MODELS_LOCK"),
    }
    raw.update({k: v for k, v in overrides.items() if v})
    if (pre := env.get("MEMBER_ML_SERVING_PRECOMPUTE")) is not None:
        raw["precompute_member_answers"] = pre.strip().lower() not in ("0", "false", "no", "off")
    if (fixes := env.get("MEMBER_ML_SERVING_RUNTIME_FIXES")) is not None:
        raw["runtime_fixes"] = [f.strip() for f in fixes.split(",") if f.strip() and f.strip() != "none"]
    try:
        return ServingConfig.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(x) for x in first["loc"])
        raise ServingConfigError(f"serving config {path}: field {field!r}: {first['msg']}") from e
