"""Settings of the timing model and the replenishment estimator, as pydantic models loadable from YAML."""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from training.member_pyfunc.replenishment import ReplenishmentParams

#: Days at which the model reports P(next order within d) (the pyfunc's p_7 … p_90 columns).
REPORT_DAYS: tuple[int, ...] = (7, 14, 30, 60, 90)


class HazardConfig(BaseModel):
    """The discrete-time hazard model: day bins up to the horizon and LightGBM settings."""

    model_config = ConfigDict(extra="forbid")

    horizon_days: int = Field(90, ge=7, le=730)
    bin_edges: list[int] | None = Field(
        None, description="day-bin edges from 0 to the horizon; default: daily to 14, then weekly/fortnightly/monthly")
    num_boost_round: int = Field(600, ge=1)
    early_stopping_rounds: int = Field(50, ge=1)
    learning_rate: float = Field(0.05, gt=0, le=1)
    num_leaves: int = Field(31, ge=2)
    min_data_in_leaf: int = Field(100, ge=1)
    feature_fraction: float = Field(0.8, gt=0, le=1)
    bagging_fraction: float = Field(0.8, gt=0, le=1)
    lambda_l2: float = Field(1.0, ge=0)
    max_days: float = Field(730.0, gt=0, description="cap on extrapolated median / expected days past the horizon")
    seed: int = 7
    num_threads: int = Field(1, ge=0, description="LightGBM threads (0 = all cores; 1 is robust on a busy machine)")
    recency_feature: str = Field(
        "recency_days", description="feature with days since the last order; enables elapsed-time features if present")
    gap_feature: str = Field(
        "gap_mean_days", description="feature with the mean inter-purchase gap; enables elapsed ÷ gap if present")

    @field_validator("bin_edges")
    @classmethod
    def _edges_increasing(cls, v: list[int] | None) -> list[int] | None:
        if v is None:
            return v
        if len(v) < 2 or v[0] != 0 or any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"bin_edges must start at 0 and strictly increase, got {v}")
        return v

    @model_validator(mode="after")
    def _edges_reach_horizon(self) -> "HazardConfig":
        if self.bin_edges is not None and self.bin_edges[-1] != self.horizon_days:
            raise ValueError(f"bin_edges must end at horizon_days={self.horizon_days}, got {self.bin_edges[-1]}")
        return self

    def edges(self) -> list[int]:
        """The bin edges in force: the configured ones, or the default grid cut at the horizon."""
        if self.bin_edges is not None:
            return list(self.bin_edges)
        grid = list(range(0, 15)) + [21, 30, 45, 60, 75, 90, 120, 150, 180, 240, 300, 365, 450, 540, 630, 730]
        edges = [e for e in grid if e < self.horizon_days] + [self.horizon_days]
        return edges


class TimingConfig(BaseModel):
    """Everything the timing trainer and evaluation need."""

    model_config = ConfigDict(extra="forbid")

    hazard: HazardConfig = Field(default_factory=HazardConfig)
    replenishment: ReplenishmentParams = Field(default_factory=ReplenishmentParams)
    train_cutoffs: int = Field(8, ge=1, description="monthly training cutoffs before the test cutoff")
    bootstrap: int = Field(200, ge=0, description="paired bootstrap resamples for the gain intervals")
    cindex_max_members: int = Field(8000, ge=100, description="sample cap for the O(n²) concordance bootstrap")


def load_config(path: str | Path | None = None) -> TimingConfig:
    """Load a `TimingConfig` from YAML (None → defaults). Unknown keys are errors that name the key."""
    if path is None:
        return TimingConfig()
    import yaml

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"timing config {p} does not exist")
    data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"timing config {p} must be a mapping, got {type(data).__name__}")
    return TimingConfig.model_validate(data)
