"""Trainer settings: pydantic models loaded from YAML (defaults, then the file's keys, then CLI overrides)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


class BoosterConfig(BaseModel):
    """Settings shared by the LightGBM member-level trainers (churn, LTV): backtest layout and booster parameters.

    Subclasses add their own keys and may change defaults; `lgb_params(objective)` is the LightGBM parameter dict.
    """

    model_config = ConfigDict(extra="forbid")

    horizon_days: int = Field(90, gt=0)
    max_train_cutoffs: int = Field(24, gt=0)
    cutoff_every_days: int | None = Field(14, gt=0)  # stacked training cutoffs every N days (None: month starts)
    bgnbd_features: bool = True  # add BG/NBD expected purchases / P(alive) (fitted on training rows) as features
    learning_rate: float = Field(0.05, gt=0, le=1)
    num_leaves: int = Field(7, ge=2)
    min_data_in_leaf: int = Field(40, ge=1)
    feature_fraction: float = Field(0.7, gt=0, le=1)
    bagging_fraction: float = Field(0.8, gt=0, le=1)
    lambda_l2: float = Field(5.0, ge=0)
    min_gain_to_split: float = Field(0.0, ge=0)
    num_boost_round: int = Field(2000, ge=1)
    early_stopping_rounds: int = Field(100, ge=1)
    exclude_features: list[str] = Field(default_factory=list)
    # refit the final model on every cutoff whose label window ends by the test cutoff (training, in-between and
    # validation ones) with the validation-chosen rounds × refit_rounds_scale (issue 5 lever table: checked on a
    # nested backtest); churn cross-fits its stack and calibration on the refit model's own out-of-fold margins
    refit: bool = True
    refit_rounds_scale: float = Field(1.0, gt=0, le=5)
    seed: int = 7
    num_threads: int = Field(1, ge=0)  # 1: OpenMP threads stall when the 2 cores are shared (0 = all cores)
    n_boot: int = Field(1000, ge=50)

    def lgb_params(self, objective: str) -> dict[str, Any]:
        """LightGBM parameters for `objective` (deterministic, row-wise, smoothed categorical splits)."""
        return {"objective": objective, "learning_rate": self.learning_rate, "num_leaves": self.num_leaves,
                "min_data_in_leaf": self.min_data_in_leaf, "feature_fraction": self.feature_fraction,
                "bagging_fraction": self.bagging_fraction, "bagging_freq": 1, "lambda_l2": self.lambda_l2,
                "min_gain_to_split": self.min_gain_to_split, "seed": self.seed, "verbose": -1,
                "num_threads": self.num_threads, "deterministic": True, "force_row_wise": True, "cat_smooth": 50.0,
                "min_data_per_group": 100}
