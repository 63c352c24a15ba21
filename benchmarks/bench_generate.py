"""Synthetic store generator speed: 1,000,000 members (about 20M order lines) generated and written to Parquet.

Runs `member-ml generate` as a subprocess (what a user runs) and reports wall seconds, rows per second and the peak
resident memory of the parent and of the worker processes. The machine's load average is recorded too, since other
jobs on a 2-core machine change wall time. Override the size with BENCH_GENERATE_MEMBERS.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import write_result


def main() -> None:
    members = int(os.environ.get("BENCH_GENERATE_MEMBERS", "1000000"))
    out = Path(tempfile.mkdtemp(prefix="bench_generate_")) / "store"
    load_before = os.getloadavg()[0]
    cmd = [sys.executable, "-m", "member_ml.cli", "generate", "--members", str(members), "--seed", "7", "--out", str(out)]
    t0 = time.perf_counter()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"generate failed ({proc.returncode}): {proc.stderr[-2000:]}")
    meta = json.loads((out / "synthetic.json").read_text(encoding="utf-8"))
    rows = meta["rows"]
    size_mib = sum(f.stat().st_size for f in out.glob("*.parquet")) / 2**20
    shutil.rmtree(out.parent, ignore_errors=True)
    order_lines = rows["orders"]
    total = sum(rows.values())
    figures = {
        "members": members,
        "order_lines": order_lines,
        "events": rows["events"],
        "order_lines_per_member": round(order_lines / members, 2),
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), 2),
        "order_lines_per_second": round(order_lines / wall),
        "rows_per_second": round(total / wall),
        "peak_rss_mib": round(r1.ru_maxrss / 1024, 1),
        "store_size_mib": round(size_mib, 1),
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
    }
    units = {
        "members": "members", "order_lines": "rows", "events": "rows", "order_lines_per_member": "rows/member",
        "wall_seconds": "s", "cpu_seconds": "s (user+sys, all processes)", "order_lines_per_second": "rows/s",
        "rows_per_second": "rows/s (all four tables)", "peak_rss_mib": "MiB (largest single process)",
        "store_size_mib": "MiB", "load_average_before": "1-min load average", "load_average_after": "1-min load average",
    }
    path = write_result("generate", figures=figures, units=units, merge=False,
                        notes={"command": " ".join(cmd[2:]), "target": "1,000,000 members in under 120 s wall",
                               "under_target": wall < 120})
    print(json.dumps(figures, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
