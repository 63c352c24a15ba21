"""Ingestion speed on the real datasets: wall and CPU seconds, rows/s per source (adapter + validation + writing)."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import peak_rss_mib, write_result
from features.ingest import ingest
from member_ml.settings import Settings


def _run(name: str, source: str, path: Any, out: Path, figures: dict[str, float], units: dict[str, str],
         counts: dict[str, Any]) -> None:
    t0, c0 = time.perf_counter(), time.process_time()
    rep = ingest(source, path, out / name)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    rows = sum(t["rows_in"] for t in rep["tables"].values())
    figures[f"{name}_ingest_s"] = round(secs, 2)
    figures[f"{name}_ingest_cpu_s"] = round(cpu, 2)  # CPU time: stable when the machine is shared
    figures[f"{name}_rows_per_s"] = round(rows / secs)
    units[f"{name}_ingest_cpu_s"] = "s"
    units[f"{name}_ingest_s"] = "s"
    units[f"{name}_rows_per_s"] = "rows/s"
    counts[name] = {t: {"rows_in": r["rows_in"], "rules": r["rules"], "outliers": r["outliers"]}
                    for t, r in rep["tables"].items()}
    print(f"{name}: {rows:,} rows in {secs:.1f} s (CPU {cpu:.1f} s)", flush=True)


def main() -> None:
    data = Settings().shared_data_dir()
    figures: dict[str, float] = {}
    units: dict[str, str] = {}
    counts: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if data.is_dir():
            _run("online_retail_2010_2011", "online-retail", data / "uci-online-retail-2010-2011", out, figures, units, counts)
            _run("online_retail_two_years", "online-retail",
                 [data / "uci-online-retail-ii-2009-2010", data / "uci-online-retail-2010-2011"], out, figures, units, counts)
            _run("taobao_userbehavior", "taobao-userbehavior",
                 data / "taobao-userbehavior-head" / "UserBehavior_head.csv", out, figures, units, counts)
        else:
            print(f"skipping real-data sources: {data} is absent")
        _run("completejourney", "completejourney", None, out, figures, units, counts)
    figures["peak_rss_mib"] = round(peak_rss_mib(), 1)
    units["peak_rss_mib"] = "MiB"
    write_result("ingest", figures=figures, units=units, notes={"rule_counts": counts})


if __name__ == "__main__":
    main()
