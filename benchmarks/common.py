"""Shared pieces of the benchmarks: machine info, peak memory, and the results writer (DESIGN §10 format)."""
from __future__ import annotations

import datetime as dt
import os
import platform
import resource
import subprocess
from pathlib import Path
from typing import Any

import psutil

from features.store import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, check=False).stdout.strip() or None
    except OSError:
        commit = None
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30),
        "python": platform.python_version(),
        "commit": commit,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def peak_rss_mib(include_children: bool = False) -> float:
    """Peak resident set size of this process (and optionally its finished children), in MiB."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if include_children:
        kib = max(kib, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return kib / 1024


def write_result(name: str, *, datasets: dict[str, Any] | None = None, figures: dict[str, float] | None = None,
                 units: dict[str, str] | None = None, notes: dict[str, Any] | None = None,
                 merge: bool = True) -> Path:
    """Write benchmarks/results/<name>.json; with `merge`, keep datasets/figures from an earlier run not re-measured."""
    path = RESULTS / f"{name}.json"
    old: dict[str, Any] = {}
    if merge and path.exists():
        import json

        old = json.loads(path.read_text())
    out = {
        "machine": machine(),
        "datasets": {**old.get("datasets", {}), **(datasets or {})},
        "figures": {**old.get("figures", {}), **(figures or {})},
        "units": {**old.get("units", {}), **(units or {})},
    }
    if notes or old.get("notes"):
        out["notes"] = {**old.get("notes", {}), **(notes or {})}
    atomic_write_json(path, out)
    return path
