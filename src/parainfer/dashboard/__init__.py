"""The live dashboard's shared parts: the page, its payload, the event stream and a small server.

One static page (``page.html``: hand-written JS plus plotly, served from the wheel, no CDN)
renders a *payload*, a JSON object that says what to show, the same for a batch job
(``batch.monitor.JobMonitor``) and for ``serve`` (``serving.dashboard``):

- ``kind`` ("job" or "serve"), ``title``, ``phase`` (text), ``t`` (seconds since the start),
  ``finished`` (True once: the last event; the page stops listening);
- ``cards``: ``[{"id", "label", "value", "text"}]``: one number each (``value`` raw, ``text``
  as shown); the page writes ``value`` into ``data-value`` so a test can read it back;
- ``charts``: ``[{"id", "title", "series": {name: number}}]``: the page appends one point per
  event to each series (``t`` on the x axis);
- ``gantt``: ``{"rows": [[lane, start_s, end_s, label], ...], "next": cursor}``: new bars
  since the client's cursor (the page keeps the last ``GANTT_KEEP``);
- ``bars``: ``[{"id", "title", "x": [...], "y": [...]}]``: replaced each event;
- ``tables``: ``[{"id", "title", "columns": [...], "rows": [[...]]}]``; a cell that is
  ``{"text", "href"}`` is a link.

The page reads ``/dashboard/api/events`` (server-sent events, one payload every
``EVENT_INTERVAL_S``) with ``fetch`` so it can send ``Authorization: Bearer KEY``; a key given
once as ``?token=KEY`` is kept in the tab's sessionStorage and removed from the address bar.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Callable, Iterator, Protocol
from urllib.parse import parse_qs, urlsplit

from parainfer.errors import UsageError

EVENT_INTERVAL_S = 0.5  # one payload per stream this often (the page updates twice a second)
GANTT_KEEP = 2000  # bars the page keeps; the server sends at most this many new ones an event
FINAL_WAIT_S = 2.0  # how long ``DashboardServer.close`` waits for open pages to get the last event
PREFIX = "/dashboard"


@functools.cache
def page_html() -> bytes:
    """The page (UTF-8 HTML bytes), read once from the package."""
    return resources.files(__name__).joinpath("page.html").read_bytes()


@functools.cache
def plotly_js() -> bytes:
    """plotly.js as shipped in the plotly wheel (``plotly.offline.get_plotlyjs()``), UTF-8 bytes."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode()


def sse(payload: dict[str, Any]) -> bytes:
    """One server-sent event carrying ``payload`` as JSON (``data: {...}`` and a blank line)."""
    return b"data: " + json.dumps(payload, separators=(",", ":"), default=str).encode() + b"\n\n"


def parse_address(value: str) -> tuple[str, int]:
    """``[HOST:]PORT`` -> ``(host, port)``; the host defaults to 127.0.0.1 (loopback only).

    Raises:
        UsageError: the port is not an integer in 0..65535 (0: any free port), or the host is empty.
    """
    host, _, port = value.rpartition(":")
    host = host.strip("[]") if host else "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise UsageError(f"--dashboard {value!r}: expected [HOST:]PORT, a port 0-65535 (0: any free port), "
                         "e.g. 8765 or 127.0.0.1:8765")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_name(host: str | None) -> bool:
    """True for a Host header's host that names this machine: localhost, *.localhost, a loopback address."""
    host = (host or "").rstrip(".").lower()
    return host.endswith(".localhost") or is_loopback(host)


def token_matches(given: str | None, key: str | None) -> bool:
    """True without a key (an open dashboard), else when ``given`` equals ``key`` (constant time)."""
    if key is None:
        return True
    return given is not None and hmac.compare_digest(given.encode(), key.encode())


def bearer(header: str | None) -> str | None:
    """The key of an ``Authorization: Bearer KEY`` value (scheme case-insensitive), else None."""
    parts = (header or "").split(None, 1)
    return parts[1].strip() if len(parts) == 2 and parts[0].lower() == "bearer" else None


class Source(Protocol):
    """What a dashboard shows: ``payload(cursor)`` returns ``(payload, next_cursor)`` (the
    cursor: how many Gantt bars this client already has; 0 at first); ``finished`` is True once
    the payload will not change again (the stream sends it one last time and ends)."""

    finished: bool

    def payload(self, cursor: int) -> tuple[dict[str, Any], int]: ...


def stream(source: Source, interval_s: float = EVENT_INTERVAL_S) -> Iterator[bytes]:
    """Server-sent events of ``source`` every ``interval_s`` seconds until it is finished
    (then its last payload and the end of the stream)."""
    cursor = 0
    while True:
        finished = source.finished
        payload, cursor = source.payload(cursor)
        yield sse(payload)
        if finished:
            return
        time.sleep(interval_s)


class DashboardServer:
    """The batch job's dashboard: a stdlib ``ThreadingHTTPServer`` in a daemon thread.

    Routes: ``/`` and ``/dashboard`` (the page), ``/dashboard/plotly.min.js``,
    ``/dashboard/api/state`` (one payload, JSON), ``/dashboard/api/events`` (server-sent
    events), and ``extra`` routes (``{path: handler(query) -> (status, content_type, bytes)}``,
    under ``/dashboard/api/``). With ``key`` the API routes need ``Authorization: Bearer KEY``
    or ``?token=KEY`` (401 otherwise); the page and plotly hold no data and stay open.

    Args:
        source: what to show (``Source``). host, port: where to listen (port 0: any free port).
        key: the bearer token, or None. extra: more API routes.

    Raises:
        UsageError: the address cannot be bound (in use, no such interface), naming it.
    """

    def __init__(self, source: Source, host: str, port: int, key: str | None = None,
                 extra: dict[str, Callable[[dict[str, list[str]]], tuple[int, str, bytes]]] | None = None):
        self.source, self.key, self.extra = source, key, extra or {}
        self.streams = 0  # open event streams (pages listening)
        self._lock = threading.Lock()
        handler = functools.partial(_Handler, self)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type("_Server", (ThreadingHTTPServer,), {"address_family": family, "daemon_threads": True})
        try:
            self.httpd = server_class((host, port), handler)
        except OSError as e:
            raise UsageError(f"--dashboard {host}:{port} cannot be served: {e.strerror or e}; "
                             "pick another port (0: any free one)") from None
        self.host, self.port = host, self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="parainfer-dashboard", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{PREFIX}"

    def close(self, wait_s: float = FINAL_WAIT_S) -> None:
        """Stop serving, after up to ``wait_s`` seconds for the open pages to get the last event
        (call it once ``source.finished`` is True)."""
        deadline = time.monotonic() + wait_s
        while self.streams and time.monotonic() < deadline:
            time.sleep(0.05)
        self.httpd.shutdown()
        self.httpd.server_close()

    def _opened(self, delta: int) -> None:
        with self._lock:
            self.streams += delta


class _Handler(BaseHTTPRequestHandler):
    """One request to ``DashboardServer`` (HTTP/1.0: an event stream ends when the connection closes)."""

    server_version = "parainfer-dashboard"

    def __init__(self, owner: DashboardServer, *args: Any):
        self.owner = owner
        super().__init__(*args)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass  # no access log on the job's stderr

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        url = urlsplit(self.path)
        path, query = url.path.rstrip("/") or "/", parse_qs(url.query)
        if is_loopback(self.owner.host) and not is_loopback_name(urlsplit(f"//{self.headers.get('Host', '')}").hostname):
            # a page of another site that renamed itself to 127.0.0.1 (DNS rebinding) reads nothing
            return self._send(403, "application/json", b'{"error": "a loopback dashboard answers only to a loopback Host"}')
        if path in ("/", PREFIX):
            return self._send(200, "text/html; charset=utf-8", page_html(), cache=False)
        if path == PREFIX + "/plotly.min.js":
            return self._send(200, "application/javascript; charset=utf-8", plotly_js(), cache=True)
        if not path.startswith(PREFIX + "/api/"):
            return self._send(404, "application/json", b'{"error": "not found"}')
        given = bearer(self.headers.get("Authorization")) or (query.get("token") or [None])[0]
        if not token_matches(given, self.owner.key):
            return self._send(401, "application/json",
                              b'{"error": "missing or wrong key: send Authorization: Bearer KEY or ?token=KEY"}')
        name = path[len(PREFIX + "/api/"):]
        if name == "state":
            return self._send(200, "application/json", json.dumps(self.owner.source.payload(0)[0], default=str).encode())
        if name == "events":
            return self._events()
        if name in self.owner.extra:
            return self._send(*self.owner.extra[name](query))
        return self._send(404, "application/json", b'{"error": "not found"}')

    def _send(self, status: int, content_type: str, body: bytes, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _events(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.owner._opened(1)
        try:
            for event in stream(self.owner.source):
                self.wfile.write(event)
                self.wfile.flush()
        except OSError:
            pass  # the page went away
        finally:
            self.owner._opened(-1)


def warn_open(host: str, key: str | None) -> None:
    """A stderr warning when the dashboard listens beyond loopback without a key."""
    if key is None and not is_loopback(host):
        print(f"warning: the dashboard on {host} is open to the network without a key; set PARAINFER_API_KEY "
              "to require one", file=sys.stderr)
