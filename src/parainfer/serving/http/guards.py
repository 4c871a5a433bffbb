"""Request guards that need no body: JSON content type on JSON routes, and the loopback guard.

* ``JsonContentTypeMiddleware``: a POST to a JSON route without ``Content-Type:
  application/json`` (or ``application/*+json``) gets 415 before its body is read (this also
  stops a browser's "simple" cross-site ``text/plain`` POST, sent without a CORS preflight).
* ``LoopbackGuardMiddleware``: on a server bound to a loopback address, a request whose ``Host``
  is not a loopback name (DNS rebinding), or whose ``Origin`` is not a loopback origin (a page of
  another site, or ``null``), gets 403; servers bound elsewhere are not guarded here. Why:
  docs/serving.md, "Errors, backpressure, limits" (403, 415).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from parainfer.serving.http.middleware import ASGIApp, Receive, Scope, Send, send_json
from parainfer.openai.errors import error_body

JSON_ROUTES = frozenset({"/v1/embeddings", "/v1/classify", "/v1/completions", "/v1/chat/completions",
                         "/v1/translations", "/v1/batches"})


def is_json_content_type(value: bytes | None) -> bool:
    """True for ``application/json`` and ``application/<x>+json`` (any parameters)."""
    if not value:
        return False
    kind = value.split(b";", 1)[0].strip().lower()
    return kind == b"application/json" or (kind.startswith(b"application/") and kind.endswith(b"+json"))


def is_loopback_name(host: str) -> bool:
    """``localhost``, ``*.localhost`` (RFC 6761), 127.0.0.0/8 or ::1 (brackets optional)."""
    host = host.strip().rstrip(".").lower().removeprefix("[").removesuffix("]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_of(header: str) -> str:
    """The host part of a Host header value (``[::1]:8000`` -> ``::1``, ``a:80`` -> ``a``)."""
    return urlsplit(f"//{header}").hostname or ""


class JsonContentTypeMiddleware:
    """415 for a POST to one of ``paths`` whose Content-Type is missing or not JSON."""

    def __init__(self, app: ASGIApp, paths: frozenset[str] = JSON_ROUTES):
        self.app, self.paths = app, paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self.paths:
            given = dict(scope["headers"]).get(b"content-type")
            if not is_json_content_type(given):
                shown = given.decode("latin-1")[:60] if given else "none"
                return await send_json(send, 415, error_body(
                    f"Content-Type must be application/json (got {shown!r}); send the body as JSON",
                    "invalid_request_error", code="unsupported_media_type"))
        await self.app(scope, receive, send)


class LoopbackGuardMiddleware:
    """403 unless Host is a loopback name and Origin (when sent) is a loopback origin."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            host = headers.get(b"host", b"").decode("latin-1")
            origin = headers.get(b"origin")
            why = None
            if host and not is_loopback_name(_host_of(host)):
                why = f"Host {host[:60]!r} is not a loopback name (this server listens on loopback only)"
            elif origin is not None and not is_loopback_name(urlsplit(origin.decode("latin-1")).hostname or ""):
                why = f"Origin {origin.decode('latin-1')[:60]!r} is another site; cross-site requests are refused"
            if why:
                return await send_json(send, 403, error_body(why, "permission_error", code="forbidden_origin"))
        await self.app(scope, receive, send)


def binds_loopback(host: str) -> bool:
    """True when ``--host`` is a loopback address or name (the guard applies)."""
    return is_loopback_name(host)
