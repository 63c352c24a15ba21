"""Work-arounds for BentoML 1.4 runtime costs found by benchmarks/bench_serving.py (figures in serving.json).

`fix_timeout_timer_leak`: BentoML's `TimeoutMiddleware` (bentoml/_internal/server/http/traffic.py) schedules
`loop.call_later(traffic.timeout, ...)` for every request and never cancels it. Each pending TimerHandle keeps the
request's contextvars Context alive for the whole timeout (60 s by default), and with it the request's OpenTelemetry
span (BoundedList, lock, deque), so at a few hundred requests/s the worker holds ~10^5 dead requests: RSS grows and
full garbage collections walk ever more objects, which is the p99 tail. The fix cancels the timer when the request
ends. It is applied once per worker when the service instance is built (never at import).

`single_thread_native`: LightGBM predicts through OpenMP with one thread per core by default. For one member that
parallel region costs more than it saves, and on a busy machine every call waits until all its OpenMP threads are
scheduled (measured under load: the timing model's call 26 ms → 11 ms with one thread). Set before LightGBM loads.

`freeze_startup_heap`: moves everything allocated during start-up (modules, models) into the GC's permanent
generation, so the collections that run under load only walk per-request garbage.
"""
from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

log = logging.getLogger("member_ml.serving")


def fix_timeout_timer_leak() -> bool:
    """Make BentoML's TimeoutMiddleware cancel its per-request timer; True when the fix is in place."""
    try:
        from bentoml._internal.server.http import traffic
    except ImportError:  # a BentoML without this module has a different server; nothing to fix
        return False
    cls = traffic.TimeoutMiddleware
    if getattr(cls, "_member_ml_timer_fix", False):
        return True
    from starlette.responses import JSONResponse

    async def __call__(self: Any, scope: dict, receive: Any, send: Any) -> None:  # noqa: N807 - ASGI entry
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

        async def _send(message: dict) -> None:
            if not waiter.done():
                waiter.set_result(None)
            await send(message)

        fut = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
        try:
            await waiter
        except asyncio.TimeoutError:
            if fut.cancel():
                resp = JSONResponse({"error": f"Not able to process the request in {self.timeout} seconds"},
                                    status_code=504)
                await resp(scope, receive, send)
        else:
            timer.cancel()  # the response has started: the timeout can no longer fire; release the request now
            await fut
        finally:
            timer.cancel()

    cls.__call__ = __call__
    cls._member_ml_timer_fix = True
    log.info("BentoML TimeoutMiddleware: per-request timers are now cancelled when the response starts")
    return True


def single_thread_native() -> bool:
    """One OpenMP/BLAS thread per worker (unless the operator set OMP_NUM_THREADS); True when we set it."""
    import os

    if "OMP_NUM_THREADS" in os.environ:
        return False
    os.environ["OMP_NUM_THREADS"] = "1"
    return True


def freeze_startup_heap() -> int:
    """Collect once, then freeze the surviving start-up objects out of future collections; returns their count."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class _ValidationLogFilter:
    """BentoML logs every rejected request at ERROR with a traceback whose message holds the request's values
    (pydantic's `input_value=...`): personal data in the log. Keep one INFO line with field locations and error
    types only."""

    def filter(self, record: Any) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        errors = getattr(exc, "errors", None)
        if exc is None or type(exc).__name__ != "ValidationError" or errors is None:
            return True
        parts = [f"{'.'.join(str(x) for x in e['loc']) or '(body)'}: {e['type']}"
                 for e in errors(include_input=False, include_context=False)]
        record.msg = "request rejected (400): %s"
        record.args = ("; ".join(parts[:10]),)
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def quiet_validation_logs() -> None:
    """Install the filter above on BentoML's request-error logger (idempotent)."""
    logger = logging.getLogger("bentoml._internal.server.http_app")
    if not any(isinstance(f, _ValidationLogFilter) for f in logger.filters):
        logger.addFilter(_ValidationLogFilter())
