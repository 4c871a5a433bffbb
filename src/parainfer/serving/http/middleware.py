"""Plain ASGI middleware of the server: metrics (+ the ``x-request-id`` header), request body
limit, and the lane of a request (online, or the server's own in-process batch calls); API-key
auth is ``auth.py``, JSON content type and the loopback guard ``guards.py``.

Plain ASGI (not Starlette's BaseHTTPMiddleware) so they do not buffer bodies and do not get in
the way of the handler noticing a client disconnect.
"""

from __future__ import annotations

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
LANE = "parainfer.lane"  # ASGI scope key; only the server's own in-process calls set it


def lane_of(scope: Scope) -> str:
    """A request's lane: "online" for every HTTP client, or the lane the server gave its own
    in-process call (``in_lane``). A scope key, never a header: a client cannot choose its lane."""
    return scope.get(LANE, "online")


def in_lane(app: ASGIApp, lane: str) -> ASGIApp:
    """``app`` as the server calls itself in-process (through ``httpx.ASGITransport``): every
    request's scope is marked with ``lane`` (e.g. "batch"), so the online-load gate does not count
    it and API-key auth lets it pass (the server vouches for its own calls)."""
    async def marked(scope: Scope, receive: Receive, send: Send) -> None:
        scope[LANE] = lane
        await app(scope, receive, send)
    return marked


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
