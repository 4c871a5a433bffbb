"""``serve``'s live dashboard at ``/dashboard``: the batch job's page (``parainfer.dashboard``)
over the server's own Prometheus registry (``metrics.ServingMetrics``), so the page and
``/metrics`` agree by construction.

Routes: ``GET /dashboard`` (the page), ``/dashboard/plotly.min.js``, ``/dashboard/api/state``
(one payload, JSON) and ``/dashboard/api/events`` (server-sent events, one payload every
``dashboard.EVENT_INTERVAL_S``). With API keys the ``/dashboard/api`` routes need one
(``http.auth.AuthMiddleware``, the same keys as /v1); the page and plotly hold no data.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any, AsyncIterator

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from parainfer.dashboard import EVENT_INTERVAL_S, page_html, plotly_js, sse
from parainfer.serving.batch_api.batches import ACTIVE
from parainfer.serving.metrics import ServingMetrics

API_PREFIX = "/dashboard/api"  # behind the API keys (``AuthMiddleware(prefix=API_PREFIX)``)
BATCH_SCAN_S = 5.0  # the OpenAI batch records are read from disk at most this often


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The ``q`` quantile (0..1) of a Prometheus histogram, as PromQL's ``histogram_quantile``:
    linear inside the bucket that holds it. ``buckets``: ``(upper bound, cumulative count)``
    sorted by bound, ``+Inf`` last. None without observations; the highest finite bound when
    the quantile falls in ``+Inf``."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * ((rank - below) / (count - below) if count > below else 0.0)
        lower, below = bound, count
    return lower


class ServeDashboard:
    """The payloads of one server's dashboard (``dashboard.Source``-like, async).

    Args:
        metrics: the app's ``ServingMetrics`` (every number comes from its registry).
        service: the app's service (its queue depth is set into the gauge, as /metrics does).
        batch_api: the app's ``BatchApi`` (OpenAI batch jobs in flight), or None.
        title: shown on the page.
    """

    def __init__(self, metrics: ServingMetrics, service: Any, batch_api: Any = None, title: str = "parainfer serve"):
        self.metrics, self.service, self.batch_api, self.title = metrics, service, batch_api, title
        self.t0 = time.perf_counter()
        self._last: tuple[float, float] | None = None  # (t, requests) of the last rate sample
        self._rate = 0.0
        self._batches: tuple[float, dict[str, int]] = (-BATCH_SCAN_S, {})

    def samples(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """Every sample of the registry now: name -> [(labels, value)] (the /metrics numbers)."""
        self.metrics.queue_depth.set(self.service.queue_depth)
        out: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        for family in self.metrics.registry.collect():
            for s in family.samples:
                out[s.name].append((s.labels, s.value))
        return out

    def payload(self) -> dict[str, Any]:
        """The dashboard payload now (format: ``parainfer.dashboard``)."""
        t = time.perf_counter() - self.t0
        m = self.samples()
        by_status: dict[str, float] = defaultdict(float)
        by_route: dict[tuple[str, str], float] = {}
        for labels, value in m["parainfer_http_requests_total"]:
            by_route[(labels["route"], labels["status"])] = value
            if labels["route"].startswith("/v1"):
                by_status[labels["status"]] += value
        api_requests = sum(by_status.values())
        rate = self._sample_rate(t, api_requests)
        buckets: dict[float, float] = defaultdict(float)
        for labels, value in m["parainfer_http_request_duration_seconds_bucket"]:
            if labels["route"].startswith("/v1"):
                buckets[float(labels["le"])] += value
        latency = sorted(buckets.items())
        p50, p90, p99 = (histogram_quantile(q, latency) for q in (0.5, 0.9, 0.99))
        sizes = sorted((float(labels["le"]), value) for labels, value in m["parainfer_batch_size_bucket"])
        size_count = _total(m, "parainfer_batch_size_count")
        mean_size = _total(m, "parainfer_batch_size_sum") / size_count if size_count else 0.0
        tokens = {labels["kind"]: value for labels, value in m["parainfer_batch_tokens_total"]}
        real_share = tokens.get("real", 0.0) / tokens["padded"] if tokens.get("padded") else None
        hit_rate = _total(m, "parainfer_prefix_cache_hit_rate") if m.get("parainfer_prefix_cache_hit_rate") else None
        ready = _total(m, "parainfer_replicas_ready")
        queue = _total(m, "parainfer_queue_depth")
        batches = self._batch_counts(t)
        in_flight = sum(batches.values())
        ms = _ms
        cards = [
            _card("requests", "API requests (/v1)", api_requests, f"{api_requests:,.0f}"),
            _card("request_rate", "requests/s (now)", round(rate, 2), f"{rate:,.1f}"),
            _card("p50_ms", "latency p50 (ms)", ms(p50), _fmt(ms(p50))),
            _card("p90_ms", "latency p90 (ms)", ms(p90), _fmt(ms(p90))),
            _card("p99_ms", "latency p99 (ms)", ms(p99), _fmt(ms(p99))),
            _card("queue", "queue depth", queue, f"{queue:,.0f}"),
            _card("rejected_429", "429 (overloaded)", by_status.get("429", 0.0), f"{by_status.get('429', 0.0):,.0f}"),
            _card("rejected_413", "413 (too large)", by_status.get("413", 0.0), f"{by_status.get('413', 0.0):,.0f}"),
            _card("replicas_ready", "replicas ready", ready, f"{ready:,.0f}"),
            _card("mean_batch", "mean batch size", round(mean_size, 2), f"{mean_size:,.1f}"),
            _card("real_token_share", "real-token share", None if real_share is None else round(real_share, 4),
                  _fmt(None if real_share is None else round(100 * real_share, 1), " %")),
            _card("prefix_hit_rate", "prefix-cache hit rate", hit_rate,
                  _fmt(None if hit_rate is None else round(100 * hit_rate, 1), " %")),
            _card("batches_in_flight", "OpenAI batch jobs in flight", in_flight, f"{in_flight:,}"),
        ]
        replicas: dict[str, list[Any]] = defaultdict(lambda: [0.0, 0.0, 0.0])
        for col, name in enumerate(("parainfer_replica_busy_seconds_total", "parainfer_replica_restarts_total",
                                    "parainfer_generation_replica_requests_total")):
            for labels, value in m.get(name, []):
                replicas[labels["replica"]][col] = round(value, 3)
        per_bucket, below = [], 0.0
        for bound, count in sizes:
            per_bucket.append(count - below)
            below = count
        return {
            "kind": "serve", "title": self.title, "t": round(t, 3), "finished": False,
            "phase": "ready" if self.service.ready else "loading", "cards": cards,
            "charts": [{"id": "rate", "title": "requests/s", "series": {"requests/s": round(rate, 3)}},
                       {"id": "latency", "title": "latency (ms, since start)",
                        "series": {"p50": ms(p50), "p90": ms(p90), "p99": ms(p99)}},
                       {"id": "queue", "title": "queue depth", "series": {"queue": queue}}],
            "bars": [{"id": "batch_sizes", "title": "model batches by size", "xtitle": "inputs per batch (at most)",
                      "x": [_bound(b) for b, _ in sizes], "y": per_bucket}],
            "tables": [
                {"id": "routes", "title": "requests by route and status", "columns": ["route", "status", "requests"],
                 "rows": [[r, s, v] for (r, s), v in sorted(by_route.items())]},
                {"id": "replicas", "title": "replicas", "columns": ["replica", "busy s", "restarts", "sequences routed"],
                 "rows": [[k, *v] for k, v in sorted(replicas.items())]},
                {"id": "batches", "title": "OpenAI batch jobs in flight", "columns": ["status", "jobs"],
                 "rows": [[k, v] for k, v in sorted(batches.items())]},
            ],
        }

    def _sample_rate(self, t: float, requests: float) -> float:
        """Requests/s since the last sample at least 1 s old (shared by every page)."""
        if self._last is None:
            self._last = (t, requests)
        elif t - self._last[0] >= 1.0:
            self._rate = (requests - self._last[1]) / (t - self._last[0])
            self._last = (t, requests)
        return self._rate

    def _batch_counts(self, t: float) -> dict[str, int]:
        """OpenAI batch jobs not yet ended, by status (read from disk at most every BATCH_SCAN_S)."""
        if self.batch_api is None:
            return {}
        if t - self._batches[0] >= BATCH_SCAN_S:
            counts: dict[str, int] = defaultdict(int)
            try:
                for batch in self.batch_api.batches.all():
                    if batch.get("status") in ACTIVE:
                        counts[batch["status"]] += 1
            except (OSError, ValueError):
                pass  # a record being written: counted at the next scan
            self._batches = (t, dict(counts))
        return self._batches[1]

    async def events(self) -> AsyncIterator[bytes]:
        """Server-sent events: one payload every ``EVENT_INTERVAL_S`` until the client leaves."""
        while True:
            yield sse(self.payload())
            await asyncio.sleep(EVENT_INTERVAL_S)


def dashboard_routes(board: ServeDashboard) -> APIRouter:
    """The /dashboard routes of ``board`` (not in the OpenAPI schema)."""
    router = APIRouter(include_in_schema=False)

    @router.get("/dashboard")
    async def page() -> HTMLResponse:
        return HTMLResponse(page_html(), headers={"Cache-Control": "no-store"})

    @router.get("/dashboard/plotly.min.js")
    async def plotly() -> Response:
        return Response(plotly_js(), media_type="application/javascript; charset=utf-8",
                        headers={"Cache-Control": "max-age=3600"})

    @router.get(API_PREFIX + "/state")
    async def state() -> JSONResponse:
        return JSONResponse(board.payload(), headers={"Cache-Control": "no-store"})

    @router.get(API_PREFIX + "/events")
    async def events() -> StreamingResponse:
        return StreamingResponse(board.events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    return router


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 2)


def _total(m: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    return sum(value for _, value in m.get(name, []))


def _card(id: str, label: str, value: Any, text: str) -> dict[str, Any]:
    return {"id": id, "label": label, "value": value, "text": text}


def _fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:,.2f}{unit}"


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else f"{bound:g}"
