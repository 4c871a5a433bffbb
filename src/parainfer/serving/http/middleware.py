"""Plain ASGI middleware of the server: metrics (+ the ``x-request-id`` header), API-key auth,
request body limit, JSON content type, and the loopback guard (``guards.py``).

Plain ASGI (not Starlette's BaseHTTPMiddleware) so they do not buffer bodies and do not get in
the way of the handler noticing a client disconnect.
"""

from __future__ import annotations

import hmac
import json
import time
from typing import Any, Awaitable, Callable

from starlette.exceptions import HTTPException

from parainfer.serving.http.errors import request_id
from parainfer.serving.metrics import ServingMetrics
from parainfer.openai.errors import error_body

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def send_json(send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    """Answer a request directly from middleware."""
    payload = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


class MetricsMiddleware:
    """Counts every HTTP answer by route template (not raw path: bounded labels) and status."""

    def __init__(self, app: ASGIApp, metrics: ServingMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id(scope).encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(route, str(status["code"])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - t0)


class AuthMiddleware:
    """Requires ``Authorization: Bearer <api_key>`` on paths under ``prefix`` (401 otherwise).

    The scheme is case-insensitive (RFC 9110 section 11.1: ``bearer`` is as good as ``Bearer``);
    the key is compared with ``hmac.compare_digest`` (constant time). Other paths (/health,
    /metrics, /docs) stay open.
    """

    def __init__(self, app: ASGIApp, api_key: str, prefix: str = "/v1"):
        self.app, self.expected, self.prefix = app, api_key.encode(), prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (scope["path"] == self.prefix or scope["path"].startswith(self.prefix + "/")):
            scheme, _, given = dict(scope["headers"]).get(b"authorization", b"").strip().partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.expected):
                return await send_json(send, 401, error_body(
                    "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                    "authentication_error", code="invalid_api_key"), {"WWW-Authenticate": "Bearer"})
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Answers 413 to a body over ``max_bytes``: at once from Content-Length, else while reading."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await send_json(send, 413, self._error(int(declared)))
        seen = 0

        async def limited_receive() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, self._error(seen)["error"]["message"])
            return message

        await self.app(scope, limited_receive, send)

    def _error(self, size: int) -> dict[str, Any]:
        return error_body(f"request body of {size} bytes is over the limit of {self.max_bytes} bytes "
                          "(--max-body-bytes); send fewer or shorter inputs per request",
                          "invalid_request_error", code="request_too_large")
