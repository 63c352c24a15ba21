"""Load generators for the serving benchmarks: wrk (concurrent, from Debian's `wrk` package) and a sequential client.

Loopback only: every URL must point at 127.0.0.1 / localhost, and every run is bounded in time or count.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _check_loopback(url: str) -> None:
    host = urlsplit(url).hostname
    if host not in LOOPBACK:
        raise ValueError(f"load tests only target loopback addresses, not {host!r}")


def ensure_wrk() -> str:
    """Path to wrk; installs Debian's package when missing and we may (root with apt-get), else a clear error."""
    path = shutil.which("wrk")
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk not found: installing Debian's package (apt-get update && apt-get install -y wrk)", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        path = shutil.which("wrk")
        if path:
            return path
    raise RuntimeError("the serving benchmark needs wrk: install it with `apt-get install -y wrk` (Debian package)")


def _lua_script(path: str, bodies: list[bytes], headers: dict[str, str]) -> str:
    """A wrk script that POSTs the bodies in turn (so /score sees many members, not one)."""
    def lua_str(b: bytes) -> str:
        return '"' + "".join(f"\\{c}" for c in b) + '"'

    hdrs = "\n".join(f'wrk.headers["{k}"] = {json.dumps(v)}' for k, v in headers.items())
    items = ",\n".join(lua_str(b) for b in bodies)
    return f"""wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
{hdrs}
local bodies = {{
{items}
}}
local i = 0
request = function()
  i = (i % #bodies) + 1
  return wrk.format("POST", "{path}", nil, bodies[i])
end
"""


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"cannot parse wrk latency {text!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


def parse_wrk(out: str) -> dict[str, float]:
    """requests, rps, p50/p75/p90/p99 (ms) and errors (non-2xx + socket errors) from `wrk --latency` output."""
    res: dict[str, float] = {}
    for q in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{q}%\s+(\S+)", out, re.M)
        if m:
            res[f"p{q}_ms"] = _ms(m.group(1))
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = float(m.group(1)) if m else 0.0
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    res["errors"] = float(errors)
    return res


def wrk(url: str, bodies: list[bytes], *, connections: int, seconds: float, threads: int = 2,
        headers: dict[str, str] | None = None, timeout_s: int = 10) -> dict[str, float]:
    """Drive POST `url` with wrk for `seconds` at `connections` keep-alive connections; parsed figures."""
    _check_loopback(url)
    exe = ensure_wrk()
    parts = urlsplit(url)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(_lua_script(parts.path or "/", bodies, headers or {}))
        script = f.name
    try:
        base = f"{parts.scheme}://{parts.netloc}"
        cmd = [exe, f"-t{min(threads, connections)}", f"-c{connections}", f"-d{int(seconds)}s", "--latency",
               f"--timeout={timeout_s}s", "-s", script, base]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    finally:
        Path(script).unlink(missing_ok=True)
    return parse_wrk(out)


def sequential(url: str, bodies: list[bytes], *, n: int, headers: dict[str, str] | None = None,
               expect: int = 200) -> dict[str, float]:
    """n POSTs one after another on one keep-alive connection; per-request wall time percentiles (ms)."""
    _check_loopback(url)
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    times: list[float] = []
    errors = 0
    try:
        for i in range(n):
            body = bodies[i % len(bodies)]
            t0 = time.perf_counter()
            conn.request("POST", parts.path, body=body, headers=hdrs)
            resp = conn.getresponse()
            resp.read()
            times.append((time.perf_counter() - t0) * 1e3)
            errors += resp.status != expect
    finally:
        conn.close()
    times.sort()
    return {
        "requests": float(n),
        "p50_ms": percentile(times, 50),
        "p99_ms": percentile(times, 99),
        "mean_ms": statistics.fmean(times),
        "max_ms": times[-1],
        "errors": float(errors),
    }


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(round(q / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def post_json(url: str, payload: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One POST, returning (status, parsed JSON body or text)."""
    _check_loopback(url)
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.request("POST", parts.path, body=json.dumps(payload).encode(),
                     headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(raw)
    except ValueError:
        return resp.status, raw.decode(errors="replace")
