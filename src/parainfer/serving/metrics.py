"""Prometheus metrics of one server, in its own CollectorRegistry (never the global one).

``ServingMetrics`` holds every metric (all prefixed ``parainfer_``): HTTP requests and latency,
queue depth, batch sizes and tokens (real, padded, computed), replica busy time, restarts and
readiness, replicas by state and the autoscaler's scale-ups and -downs, and for ``--task generate`` time to first token, inter-token latency, generated
tokens, sequences by finish reason and per replica. ``EngineStatsCollector`` reads the engine's
prefill and prefix-cache counters at scrape time, ``GrammarStatsCollector`` its structured-output
compiles and compiled-grammar cache. Every name and what it counts:
docs/serving.md, "Metrics (`GET /metrics`)".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
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
        self.queue_wait = Histogram("parainfer_queue_wait_seconds", "seconds an input waited in the batcher's "
                                    "queue until its batch was cut", buckets=LATENCY_BUCKETS, registry=r)
        self.batch_tokens = Counter("parainfer_batch_tokens", "tokens in model batches: real, or padded "
                                    "(batch size x longest)", ["kind"], registry=r)
        for kind in ("real", "padded", "computed"):  # exported as 0 before the first batch, so scrapers see both
            self.batch_tokens.labels(kind)
        self.busy = Counter("parainfer_replica_busy_seconds", "model compute seconds per replica", ["replica"],
                            registry=r)
        self.restarts = Counter("parainfer_replica_restarts", "replica restarts after a crash", ["replica"],
                                registry=r)
        self.replicas_ready = Gauge("parainfer_replicas_ready", "replicas that can take batches", registry=r)
        self.replicas = Gauge("parainfer_replicas", "replicas by state: starting (loading, not routed to), "
                              "ready (routed to), draining (finishing their work before they stop)", ["state"],
                              registry=r)
        self.replicas_desired = Gauge("parainfer_replicas_desired", "replicas the autoscaler aims for now "
                                      "(min = max without --max-replicas)", registry=r)
        self.scale_ups = Counter("parainfer_autoscaler_scale_ups", "replicas added by the autoscaler, by reason",
                                 ["reason"], registry=r)
        self.scale_downs = Counter("parainfer_autoscaler_scale_downs", "replicas removed (drained, then stopped) "
                                   "by the autoscaler, by reason", ["reason"], registry=r)
        self.scale_ups.labels("load_above_target")
        self.scale_downs.labels("load_below_target")
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

    def observe_batch(self, tokens: list[int], waited_s: Sequence[float] = ()) -> None:
        """Count one model batch of inputs with these token lengths, and the seconds each waited
        in the queue (``waited_s``, in the same order; empty: not known)."""
        for waited in waited_s:
            self.queue_wait.observe(waited)
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


class GrammarStatsCollector:
    """Exports structured output's compiles and compiled-grammar cache (``GrammarCompiler.stats``),
    read at each scrape.

    Args:
        grammar_stats: returns ``GrammarCompiler.stats``, or None while no engine is loaded
            (every value is then 0).
    """

    def __init__(self, grammar_stats: Callable[[], dict | None]) -> None:
        self._grammar_stats = grammar_stats

    def collect(self) -> Iterator[Metric]:
        from parainfer.generation.grammar import COMPILE_SECONDS_BUCKETS

        stats = self._grammar_stats() or {}
        counts = stats.get("compile_seconds_buckets") or [0] * (len(COMPILE_SECONDS_BUCKETS) + 1)
        cumulative, buckets = 0, []
        for bound, n in zip([*map(str, COMPILE_SECONDS_BUCKETS), "+Inf"], counts):
            cumulative += n
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily("parainfer_grammar_compile_seconds", "seconds each JSON schema took to compile "
                                    "(xgrammar, in a compile thread; finished compiles, failed ones included)",
                                    buckets=buckets, sum_value=stats.get("compile_seconds_sum", 0.0))
        for name, key, text in (
                ("grammar_cache_hits", "hits", "response formats whose grammar was in the compiled-grammar cache"),
                ("grammar_cache_misses", "misses", "response formats that needed a compile (or joined one)"),
                ("grammar_cache_evictions", "evictions", "compiled grammars dropped from the cache for room"),
                ("grammar_compile_errors", "compile_errors", "schemas xgrammar refused (answered 400)"),
                ("grammar_compile_timeouts", "timeouts", ("requests whose schema did not compile within the "
                                                          "time budget (answered 408)")),
                ("grammar_schemas_rejected", "rejected", ("schemas refused by the size and $ref checks before "
                                                          "any compile (answered 400 or 413)"))):
            yield CounterMetricFamily(f"parainfer_{name}", text, value=stats.get(key, 0))
        yield GaugeMetricFamily("parainfer_grammar_cache_bytes", "bytes of the compiled grammars in the cache",
                                value=stats.get("cache_bytes", 0))
        yield GaugeMetricFamily("parainfer_grammar_cache_entries", "compiled grammars in the cache",
                                value=stats.get("cache_entries", 0))
        yield GaugeMetricFamily("parainfer_grammar_compiling", "schemas compiling or queued for a compile thread",
                                value=stats.get("compiling", 0))
