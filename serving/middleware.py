"""ASGI middlewares of the online service: body-size limit, optional bearer token, request log without personal data.

Each answers its own 4xx with a JSON body `{"error": ..., "field": ...}` so a client learns what was wrong; none of
them reads or logs the request content (member ids, histories) or the client's address.
"""
from __future__ import annotations

import hmac
import json
import logging
import time
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]

# Paths that stay open without a token: probes, metrics and the API documentation.
OPEN_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/metrics", "/", "/docs.json", "/schema.json"})
OPEN_PREFIXES = ("/static_content/", "/assets/")

log = logging.getLogger("member_ml.serving.requests")


async def send_json(send: Any, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] = ()) -> None:
    """Send a complete JSON response from a middleware."""
    raw = json.dumps(body, ensure_ascii=False).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": raw})


class BodyLimitMiddleware:
    """Reject request bodies larger than `max_bytes` with 413, before anything parses them.

    A declared Content-Length is checked up front; a chunked body is read up to the limit and replayed to the app.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> dict[str, Any]:
        return {"error": f"request body exceeds the limit of {self.max_bytes} bytes "
                         "(MEMBER_ML_SERVING_MAX_BODY_BYTES)", "field": "body"}

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = None
        for k, v in scope.get("headers", ()):
            if k == b"content-length":
                try:
                    length = int(v)
                except ValueError:
                    return await send_json(send, 400, {"error": "Content-Length is not an integer",
                                                       "field": "Content-Length"})
                break
        if length is not None:
            if length > self.max_bytes:
                return await send_json(send, 413, self._too_large())
            return await self.app(scope, receive, send)
        # No declared length (chunked): buffer up to the limit, then replay.
        messages: list[Message] = []
        size = 0
        while True:
            msg = await receive()
            messages.append(msg)
            if msg["type"] != "http.request":
                break
            size += len(msg.get("body", b""))
            if size > self.max_bytes:
                return await send_json(send, 413, self._too_large())
            if not msg.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


class JsonOnlyMiddleware:
    """Every API endpoint takes a JSON body: a POST declaring another media type gets 415 naming the header.

    Without it BentoML hands `multipart/form-data` (even without a boundary) to its form parser, which fails with a
    500 (found by schemathesis). A request without Content-Type is left to the JSON parser (400 when not JSON).
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        ctype = next((v for k, v in scope.get("headers", ()) if k == b"content-type"), None)
        if ctype is not None:
            media = ctype.split(b";", 1)[0].strip().lower()
            if media != b"application/json" and not media.endswith(b"+json"):
                shown = media.decode("latin-1")[:80] or "(empty)"
                return await send_json(send, 415, {"error": f"unsupported Content-Type {shown!r}: send "
                                                            "application/json", "field": "Content-Type"})
        await self.app(scope, receive, send)


class BearerAuthMiddleware:
    """When a token is configured, API calls need `Authorization: Bearer <token>` (constant-time comparison)."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES) or scope.get("method") == "OPTIONS":
            return await self.app(scope, receive, send)
        given = next((v for k, v in scope.get("headers", ()) if k == b"authorization"), b"")
        if not hmac.compare_digest(given, self.expected):
            problem = "missing" if not given else "invalid"
            return await send_json(send, 401, {"error": f"bearer token {problem}", "field": "Authorization"},
                                   [(b"www-authenticate", b"Bearer")])
        await self.app(scope, receive, send)


class RequestLogMiddleware:
    """One log line per request: method, path, status, milliseconds. No body, no query, no client address.

    2xx lines go to DEBUG (a per-request INFO line costs latency under load); 4xx/5xx go to INFO/WARNING.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = 500

        async def _send(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, _send)
        finally:
            level = logging.DEBUG if status < 400 else logging.INFO if status < 500 else logging.WARNING
            if log.isEnabledFor(level):
                log.log(level, "%s %s %d %.1fms", scope.get("method"), scope.get("path"), status,
                        (time.perf_counter() - t0) * 1e3)
