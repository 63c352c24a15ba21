"""Start `bentoml serve` for this service on a loopback port and stop it again (tests, benchmarks, demos).

The server runs in its own process group so that stopping it ends its worker processes too, and nothing else.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from member_ml.settings import project_root

SERVICE_TARGET = "serving.service:MemberScoring"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    url: str
    port: int
    process: subprocess.Popen
    log_path: Path
    env: dict[str, str]

    def worker_pids(self) -> list[int]:
        """PIDs of the BentoML HTTP worker processes (children of the server) serving requests."""
        import psutil

        out = []
        for child in psutil.Process(self.process.pid).children(recursive=True):
            try:
                if "_bentoml_impl.worker.service" in " ".join(child.cmdline()):
                    out.append(child.pid)
            except psutil.Error:
                continue
        return out

    def worker_rss_mib(self) -> float:
        """Summed resident memory of the workers, MiB."""
        import psutil

        total = 0
        for pid in self.worker_pids():
            try:
                total += psutil.Process(pid).memory_info().rss
            except psutil.Error:
                continue
        return total / 2**20

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def _die_with_parent() -> None:
    """Runs in the child before exec (Linux): SIGTERM it when the process that started it dies, so a killed test
    run or benchmark never leaves a server behind. Elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    except OSError:
        pass


def _get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return 0


@contextmanager
def serve(env: Mapping[str, str] | None = None, *, port: int | None = None, log_path: Path | None = None,
          ready_timeout: float = 120.0, target: str = SERVICE_TARGET, cwd: Path | None = None,
          wait_for: str = "/readyz") -> Iterator[RunningServer]:
    """Run `bentoml serve target` on 127.0.0.1:port until the block ends; waits until `wait_for` answers 200.

    Fails fast and clearly: RuntimeError with the server's log tail when it exits during start-up, TimeoutError
    (also with the log tail) when `wait_for` is not 200 within `ready_timeout` seconds. The server is stopped
    whenever the block ends, however it ends."""
    port = port or free_port()
    cwd = cwd or project_root()
    log_path = log_path or Path(os.environ.get("TMPDIR", "/tmp")) / f"member_ml_serve_{port}.log"
    bentoml = Path(sys.executable).parent / "bentoml"
    cmd = [str(bentoml), "serve", target, "--host", "127.0.0.1", "--port", str(port)]
    full_env = {**os.environ, **(env or {})}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_die_with_parent)
    server = RunningServer(f"http://127.0.0.1:{port}", port, proc, log_path, dict(env or {}))
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"bentoml serve exited with {proc.returncode}:\n{server.log_tail()}")
            if _get(server.url + wait_for) == 200:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"service not ready on {server.url}{wait_for} after {ready_timeout:.0f} s:\n"
                                   f"{server.log_tail()}")
            time.sleep(0.25)
        yield server
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM the server's own process group, then SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)
