"""Trainer settings: pydantic models loaded from YAML (defaults, then the file's keys, then CLI overrides)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

C = TypeVar("C", bound=BaseModel)


def load_config(cls: type[C], path: str | Path | None = None, **overrides: Any) -> C:
    """Build `cls` from a YAML file (optional) and non-None overrides; errors name the file and the field."""
    import yaml

    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ValueError(f"config file {p} does not exist")
        loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {p} must hold a mapping of settings, got {type(loaded).__name__}")
        data = loaded
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return cls(**data)
    except ValidationError as e:
        where = f" in {path}" if path is not None else ""
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise ValueError(f"invalid {cls.__name__}{where}: {problems}") from None
