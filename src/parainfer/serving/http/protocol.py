"""uvicorn settings against slow clients, and the header-read timeout uvicorn lacks.

Measured on uvicorn 0.54 (httptools): ``timeout_keep_alive`` (default 5 s) closes a connection
idle *between* requests, but nothing times out a connection that sends no request or sends its
headers slowly (slowloris): such a client holds its socket, and its share of the server, for
as long as it likes. ``HeaderTimeoutProtocol`` closes a connection whose request headers are
not complete ``header_timeout_s`` seconds after the connection opened or the request's first
byte arrived (between requests, uvicorn's keep-alive timeout closes an idle connection). The body is not timed (an upload may be slow); it is bounded by
``--max-body-bytes``.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADER_TIMEOUT_S = 10.0
KEEP_ALIVE_S = 5  # uvicorn's default, set explicitly


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus a deadline for reading each request's headers."""

    header_timeout_s = HEADER_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: Any = None

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def protocol(header_timeout_s: float) -> type[HeaderTimeoutProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)`` with this header timeout (seconds)."""
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout_s": header_timeout_s})


def uvicorn_settings(header_timeout_s: float = HEADER_TIMEOUT_S) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config``/``uvicorn.run``: the protocol and keep-alive."""
    return {"http": protocol(header_timeout_s), "timeout_keep_alive": KEEP_ALIVE_S}
