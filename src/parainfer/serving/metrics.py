"""Prometheus metrics of one server, in its own CollectorRegistry (never the global one).

Names (all prefixed ``parainfer_``):

* ``http_requests_total{route,status}``: requests answered, by route template and status code.
* ``http_request_duration_seconds{route}``: latency histogram, arrival to response.
* ``queue_depth``: inputs waiting for a batch (gauge).
* ``batch_size``: inputs per model batch (histogram; mean = _sum / _count).
* ``batch_tokens_total{kind="real"|"padded"|"computed"}``: real tokens vs B x longest per batch
  (their ratio is the padding efficiency that length grouping buys) vs the padded tokens the
  workers computed after cutting each batch into length groups (``TokenCounts.padded``).
* ``replica_busy_seconds_total{replica}``: model compute time per replica.
* ``replica_restarts_total{replica}``: replicas restarted after a crash.
* ``replicas_ready``: replicas that can take batches (gauge).

Generation (``--task generate``):

* ``time_to_first_token_seconds``: request arrival to its first generated token (histogram).
* ``inter_token_latency_seconds``: time between consecutive tokens of one sequence (histogram).
* ``generated_tokens_total``: tokens generated (EOS included, as the usage numbers count them).
* ``generation_sequences_total{finish_reason}``: sequences ended: stop, length, abort (client
  left or timed out), error.
* ``generation_sequences_running``: sequences in the engine, running or waiting (gauge).
* ``generation_replica_requests_total{replica}``: sequences routed to each engine replica
  (``--workers N`` > 1 or ``--executor ray``; ``replica_restarts_total`` and ``replicas_ready``
  count their restarts and the ready ones).
* ``prefill_tokens_total{kind="computed"|"cached"}``: prompt tokens the model computed at
  prefill (recomputes after a preemption included), and those skipped because their keys and
  values came from the prefix cache (``EngineStatsCollector``, read from the engine at scrape time).
* ``prefix_cache_queries_total`` / ``prefix_cache_hits_total``: prompt tokens looked up in the
  prefix cache / found there; ``prefix_cache_hit_rate``: hits / queries (gauge). These three
  and ``prefill_tokens_total`` count from the engine's start: they restart at 0 when the
  engine is rebuilt after a fault (Prometheus' ``rate`` handles counter resets). With engine
  replicas they are the sum of the replicas' counters (a restarted replica counts from 0).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 128, 256)
TOKEN_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)


class ServingMetrics:
    """The metric objects of one app; ``render()`` is the /metrics body."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("parainfer_http_requests", "HTTP requests answered", ["route", "status"], registry=r)
        self.latency = Histogram("parainfer_http_request_duration_seconds", "HTTP request latency (s)", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("parainfer_queue_depth", "inputs waiting for a model batch", registry=r)
        self.batch_size = Histogram("parainfer_batch_size", "inputs per model batch", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.batch_tokens = Counter("parainfer_batch_tokens", "tokens in model batches: real, or padded "
                                    "(batch size x longest)", ["kind"], registry=r)
        for kind in ("real", "padded", "computed"):  # exported as 0 before the first batch, so scrapers see both
            self.batch_tokens.labels(kind)
        self.busy = Counter("parainfer_replica_busy_seconds", "model compute seconds per replica", ["replica"],
                            registry=r)
        self.restarts = Counter("parainfer_replica_restarts", "replica restarts after a crash", ["replica"],
                                registry=r)
        self.replicas_ready = Gauge("parainfer_replicas_ready", "replicas that can take batches", registry=r)
        self.ttft = Histogram("parainfer_time_to_first_token_seconds", "request arrival to first generated token (s)",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.itl = Histogram("parainfer_inter_token_latency_seconds", "time between tokens of one sequence (s)",
                             buckets=TOKEN_BUCKETS, registry=r)
        self.generated_tokens = Counter("parainfer_generated_tokens", "tokens generated", registry=r)
        self.sequences = Counter("parainfer_generation_sequences", "generated sequences ended, by finish reason",
                                 ["finish_reason"], registry=r)
        self.sequences_running = Gauge("parainfer_generation_sequences_running",
                                       "sequences in the engine (running or waiting)", registry=r)
        self.replica_requests = Counter("parainfer_generation_replica_requests", "sequences routed to each "
                                        "generation replica (--workers N > 1 or --executor ray)", ["replica"],
                                        registry=r)

    def observe_batch(self, tokens: list[int]) -> None:
        """Count one model batch of inputs with these token lengths."""
        self.batch_size.observe(len(tokens))
        self.batch_tokens.labels("real").inc(sum(tokens))
        self.batch_tokens.labels("padded").inc(len(tokens) * max(tokens))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class EngineStatsCollector:
    """Exports a generation engine's prefill and prefix-cache counters, read at each scrape.

    Args:
        engine_stats: returns the engine's ``stats`` dict (``LLMEngine.stats``), or None while
            no engine is loaded (every value is then 0).
    """

    def __init__(self, engine_stats: Callable[[], dict | None]) -> None:
        self._engine_stats = engine_stats

    def collect(self) -> Iterator[Metric]:
        stats = self._engine_stats() or {}
        computed, hits = stats.get("prefill_tokens", 0), stats.get("prefix_cache_hit_tokens", 0)
        queries = stats.get("prefix_cache_queried_tokens", 0)
        prefill = CounterMetricFamily("parainfer_prefill_tokens", "prompt tokens at prefill: computed by the model, "
                                      "or cached (read from the prefix cache, not computed)", labels=["kind"])
        prefill.add_metric(["computed"], computed)
        prefill.add_metric(["cached"], hits)
        yield prefill
        yield CounterMetricFamily("parainfer_prefix_cache_queries", "prompt tokens looked up in the prefix cache",
                                  value=queries)
        yield CounterMetricFamily("parainfer_prefix_cache_hits", "prompt tokens found in the prefix cache",
                                  value=hits)
        yield GaugeMetricFamily("parainfer_prefix_cache_hit_rate", "prefix cache hits / queries (tokens) since "
                                "the engine started", value=hits / queries if queries else 0.0)
