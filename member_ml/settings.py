"""Settings built in the entry point and passed down (no import-time side effects)."""
from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field


def project_root() -> Path:
    """The repository root when running from a checkout, else the current directory."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").exists() else Path.cwd()


class Settings(BaseModel):
    root: Path = Field(default_factory=project_root)
    tracking_uri: str | None = None
    shared_data: Path | None = None

    @property
    def mlflow_dir(self) -> Path:
        return self.root / "mlflow"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def resolved_tracking_uri(self) -> str:
        """MLFLOW_TRACKING_URI wins; else a SQLite store under mlflow/ (the registry needs a database)."""
        uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if uri:
            return uri
        self.mlflow_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    def artifact_root(self) -> str:
        return (self.mlflow_dir / "artifacts").as_uri()

    def shared_data_dir(self) -> Path:
        """Real datasets folder: MEMBER_ML_SHARED_DATA, else ../shared/data next to the checkout."""
        if self.shared_data is not None:
            return self.shared_data
        env = os.environ.get("MEMBER_ML_SHARED_DATA")
        return Path(env) if env else self.root.parent / "shared" / "data"


def load_settings() -> Settings:
    return Settings()
