"""Shared pytest fixtures. Area-specific fixtures live in the area's own test modules or tests/fixtures_*.py."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _headless_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or MEMBER_ML_SHARED_DATA); skips with a clear message when absent (a user's clone has none)."""
    p = Path(os.environ.get("MEMBER_ML_SHARED_DATA", ROOT.parent / "shared" / "data"))
    if not p.is_dir():
        pytest.skip(f"real datasets folder {p} is absent (set MEMBER_ML_SHARED_DATA or place ../shared/data)")
    return p


@pytest.fixture()
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A private SQLite MLflow store per test, set through MLFLOW_TRACKING_URI as users would.

    Copied from an initialised template database, so no test pays MLflow's ~15 s of schema migrations.
    """
    from tests.fixtures_models import initialised_mlflow_db, use_template_db

    uri = use_template_db(initialised_mlflow_db(), f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture(scope="module")
def spark():
    """A local Spark session (2 cores, 2 shuffle partitions) for the `spark`-marked tests; skips without pyspark/Java."""
    import shutil

    pytest.importorskip("pyspark", reason="pyspark not installed: pip install 'member-ml[spark]'")
    if shutil.which("java") is None:
        pytest.skip("no Java on PATH: Spark needs Java 17+")
    from features.spark_engine import local_spark

    session = local_spark(cores=2, shuffle_partitions=2, fast_start=True)
    yield session
    session.stop()
