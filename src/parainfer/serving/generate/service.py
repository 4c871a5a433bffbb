"""The generation service behind /v1/completions and /v1/chat/completions (``--task generate``).

:class:`GenerationService` owns the engine: by default (``--workers 1``) one
:class:`~parainfer.generation.LLMEngine` in the server process, stepped by an
:class:`~parainfer.generation.EngineLoop` thread; with ``--workers N`` > 1 or ``--executor ray`` a
:class:`~parainfer.serving.generate.sequence_router.SequenceRouter` over engine replicas in its
place. It admits requests (``admit_completion`` / ``admit_chat``), runs them (``complete``,
``stream``) and rebuilds a broken engine with the same factory (/health says ``"rebuilding"``).
Why one engine, the admission order, fault isolation: docs/serving.md, "Generation" ("One
engine", "Engine replicas", "Admission and the request's life", "One request fails only itself").
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from typing import Any, AsyncIterator, Callable

from starlette.requests import Request

from parainfer.errors import UsageError
from parainfer.openai.bodies import Choice
from parainfer.openai.requests import grammar_error
from parainfer.serving.autoscale import Autoscaler
from parainfer.serving.config import ServeConfig
from parainfer.openai.errors import ApiError
from parainfer.serving.http.errors import request_id
from parainfer.serving.generate.admission import Admission, Admitted, Reservation
from parainfer.serving.generate.sequence_router import SequenceRouter, start_router
from parainfer.serving.metrics import EngineStatsCollector, GrammarStatsCollector, ServingMetrics
from parainfer.serving.embed.service import wait_or_give_up

log = logging.getLogger(__name__)
REBUILD_RETRY_AFTER_S = 10
__all__ = ["Admitted", "Choice", "GenerationService", "Reservation", "uses_replicas"]




def uses_replicas(config: ServeConfig) -> bool:
    """True when the engines run in workers (``--workers`` > 1 or ``--executor ray``); else one
    engine runs in the server process (``--workers 1``, the default for generate)."""
    return config.workers > 1 or config.executor == "ray"


class GenerationService(Admission):
    """Owns the engine, its loop thread, admission and the generation metrics of one app (a
    ``serving.service.Service``).

    Args:
        config: the server settings (``model``, ``dtype``, ``max_num_seqs``, ``max_queue``,
            ``request_timeout_s``, ``threads_per_worker``).
        metrics: where time to first token, inter-token latency and token counts go.
        engine_factory: builds the engine (runs in a loader thread); default loads
            ``config.model`` or SmolLM2-135M-Instruct. Also used to rebuild a broken engine.
    """

    def __init__(self, config: ServeConfig, metrics: ServingMetrics,
                 engine_factory: Callable[[], Any] | None = None) -> None:
        self.config, self.metrics = config, metrics
        self._factory = engine_factory or self._build_engine
        self.loop: Any = None  # EngineLoop once loaded
        self.load_error: BaseException | None = None
        self.state = "loading"  # loading | ok | rebuilding | failed
        self.rebuilds = 0
        self.running = 0  # sequences admitted (reserved or in the engine)
        self._done_times: list[float] = []  # recent sequence ends, for Retry-After
        self._cpu = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parainfer-gen-cpu")
        self.replicas: SequenceRouter | None = None  # when the engines run in workers (uses_replicas)
        self.autoscaler: Autoscaler | None = None  # with the replicas
        for reason in ("stop", "length", "abort", "error"):
            metrics.sequences.labels(reason)
        metrics.registry.register(EngineStatsCollector(self._engine_stats))
        metrics.registry.register(GrammarStatsCollector(self._grammar_stats))

    # ---- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the engine in a background thread (/health says 503 until it is up); with
        replicas (``uses_replicas``), start them instead."""
        if uses_replicas(self.config):
            await self._start_replicas()
            return
        threading.Thread(target=self._load, name="parainfer-engine-load", daemon=True).start()

    # ---- replicas: --workers N > 1 or --executor ray (sequence_router) ---------------------------

    async def _start_replicas(self) -> None:
        """One engine per worker (local processes or Ray actors), routed by outstanding tokens.

        Raises:
            UsageError: a Ray cluster without room for the actors (the server does not start).
        """
        for w in range(self.config.workers):  # the series exist (at 0) from the first scrape
            self.metrics.restarts.labels(str(w))
            self.metrics.replica_requests.labels(str(w))
        self.replicas = await start_router(self.config, on_ready=self._replicas_ready,
                                           on_failed=self._replicas_failed, on_restart=self._replica_restarted,
                                           on_route=lambda w: self.metrics.replica_requests.labels(str(w)).inc())
        self.autoscaler = Autoscaler(self.replicas, self.config.autoscale_policy(), self.metrics)
        self.autoscaler.start()

    def _replicas_ready(self) -> None:
        if self.state in ("loading", "rebuilding", "ok"):
            self.loop, self.state = self.replicas, "ok"
        self.metrics.replicas_ready.set(self.replicas.ready_count)

    def _replicas_failed(self, reason: str) -> None:
        log.error("every generation replica failed: %s", reason)
        self.load_error, self.state = RuntimeError(reason), "failed"

    def _replica_restarted(self, worker: int) -> None:
        self.rebuilds += 1
        self.metrics.restarts.labels(str(worker)).inc()
        self.metrics.replicas_ready.set(self.replicas.ready_count)

    async def stop(self) -> None:
        """Stop the engine thread; sequences still in it end with an error (uvicorn has already
        waited for the requests in flight)."""
        self.state = "stopped"
        self._cpu.shutdown(wait=False, cancel_futures=True)
        if self.autoscaler is not None:
            await self.autoscaler.stop()
        if self.replicas is not None:
            self.replicas.fail_all(ConnectionAbortedError("server is shutting down"))
            await asyncio.to_thread(self.replicas.stop)
            return
        loop = self.loop
        if loop is None:
            return
        await asyncio.to_thread(loop.stop)
        loop.engine.fail_all(ConnectionAbortedError("server is shutting down"))

    def _build_engine(self) -> Any:
        from parainfer.generation import LLMEngine, resolve_model

        path = resolve_model(self.config.model)
        dtype = "float32" if self.config.dtype == "auto" else self.config.dtype
        return LLMEngine(path, dtype=dtype, max_num_seqs=self.config.max_num_seqs,
                         threads=self.config.threads_per_worker,
                         enable_prefix_caching=self.config.prefix_cache, grammar=self.config.grammar_settings(),
                         deterministic=bool(self.config.deterministic))

    def _load(self) -> None:
        from parainfer.generation import EngineLoop

        try:
            engine = self._factory()
            loop = EngineLoop(engine, on_error=self._on_engine_error).start()
            if hasattr(engine, "grammars"):
                engine.grammars.warm_up()  # the first response_format does not pay for the vocabulary view
        except BaseException as exc:  # noqa: BLE001 - reported by /health and every request
            log.exception("generation engine failed to load")
            self.load_error, self.state = exc, "failed"
            return
        if self.state == "stopped":
            loop.stop()
            return
        self.loop, self.state = loop, "ok"

    def _on_engine_error(self, exc: BaseException) -> None:
        """The engine loop stopped on an error (its requests have been failed): build a new
        engine in the background. Called in the old loop's thread."""
        if self.state == "stopped":
            return
        log.error("generation engine broke (%s); rebuilding it", type(exc).__name__)
        self.state, self.loop = "rebuilding", None  # drop the broken engine before loading anew
        self.rebuilds += 1
        threading.Thread(target=self._load, name="parainfer-engine-rebuild", daemon=True).start()

    def _engine_stats(self) -> dict[str, Any] | None:
        """A copy of the loaded engine's counters (prefill, prefix cache), for /metrics."""
        loop = self.loop
        stats = None if loop is None else getattr(loop.engine, "stats", None)
        return None if stats is None else dict(stats)

    def _grammar_stats(self) -> dict[str, Any] | None:
        """The compiled-grammar counters of the engine (or, with replicas, of the server's
        admission compiler, which compiles every schema first), for /metrics."""
        loop = self.loop
        grammars = None if loop is None or loop.engine is None else getattr(loop.engine, "grammars", None)
        return None if grammars is None else grammars.stats

    @property
    def ready(self) -> bool:
        replicas_up = self.replicas is None or self.replicas.ready_count > 0
        return self.state == "ok" and self.loop is not None and self.loop.error is None and replicas_up

    @property
    def queue_depth(self) -> int:
        return self.running

    def health(self) -> dict[str, Any]:
        """The /health body: status ok | loading | rebuilding | failed, plus engine numbers once
        loaded. No exception text (that is in the server log)."""
        body: dict[str, Any] = {"status": self.state, "task": "generate", "sequences_running": self.running,
                                "engine_rebuilds": self.rebuilds}
        if self.state == "failed":
            body["error"] = "the generation engine could not load; see the server log"
        loop = self.loop
        if loop is not None:
            engine = loop.engine
            body.update(max_model_len=engine.max_model_len, max_num_seqs=engine.config.max_num_seqs,
                        dtype=engine.config.dtype, engine_stats=dict(engine.stats))
            numerics = dict(engine.batch_invariance)
            body.update(deterministic=numerics.pop("deterministic"), batch_invariance=numerics)
        if self.replicas is not None:
            counts = self.replicas.replica_counts()
            body.update(executor=self.config.executor, replicas=sum(r.active for r in self.replicas.replicas),
                        replicas_ready=self.replicas.ready_count, replica_state=self.replicas.describe())
            if self.autoscaler is not None:
                body["autoscaling"] = self.autoscaler.describe(counts)
            if self.state == "ok" and not self.replicas.ready_count:
                body["status"] = "rebuilding"
        return body

    # ---- admission -----------------------------------------------------------------------------

    def _engine(self) -> Any:
        loop = self.loop
        if loop is not None and loop.error is None and self.state == "ok":
            return loop.engine
        if self.state == "failed":
            raise ApiError(503, "the generation engine failed to load; see /health and the server log",
                           code="no_engine")
        if self.state in ("rebuilding", "ok"):
            raise ApiError(503, "the generation engine is being rebuilt after a fault; retry shortly",
                           code="engine_rebuilding", headers={"Retry-After": str(REBUILD_RETRY_AFTER_S)})
        raise ApiError(503, "the model is still loading; retry shortly (GET /health says 200 when ready)",
                       code="loading", headers={"Retry-After": "5"})

    # ---- running -------------------------------------------------------------------------------

    async def complete(self, prompts: list[list[int]], params: Any, request: Request,
                       reservation: Reservation | None = None) -> list[Choice]:
        """Generate every prompt; returns one Choice each, in order.

        Args:
            reservation: the request's room from admission (released here when done); None
                takes room now without a check (callers that used ``admit``).

        Raises:
            ApiError: 504 past --request-timeout-s, 503 the engine failed (a generic message
                with the request id; the exception is logged).
            ClientGone: the client disconnected (its sequences were aborted).
        """
        reservation = reservation or self._take(len(prompts))
        t0 = time.perf_counter()
        try:
            work = asyncio.gather(*(self._collect(i, ids, params, t0) for i, ids in enumerate(prompts)))
            await wait_or_give_up(work, request, self.config.request_timeout_s, "; or stream it")
            try:
                return work.result()
            except ApiError:
                raise
            except UsageError as exc:  # the engine refused the request (its schema did not compile in time)
                raise grammar_error(exc) from None
            except Exception as exc:
                rid = request_id(request.scope)
                log.error("request %s: generation failed: %s: %s", rid, type(exc).__name__, exc)
                raise ApiError(503, f"generation failed (request id {rid}; see the server log); retry it",
                               code="engine_error", headers={"Retry-After": "1"}) from None
        finally:
            reservation.release()

    async def stream(self, prompts: list[list[int]], params: Any,
                     reservation: Reservation | None = None) -> AsyncIterator[tuple[int, Any]]:
        """Yield ``(prompt index, RequestOutput)`` as the engine produces them, all prompts
        interleaved. Closing the iterator early aborts every sequence still running; the
        reservation (see ``complete``) is released when it ends.

        Raises:
            Exception: what the engine raised (its loop failed or shut down).
        """
        reservation = reservation or self._take(len(prompts))
        t0 = time.perf_counter()
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(i: int, ids: list[int]) -> None:
            try:
                async with aclosing(self._sequence(ids, params, t0)) as outs:
                    async for out in outs:
                        queue.put_nowait((i, out))
            except Exception as exc:  # noqa: BLE001 - handed to the consumer
                queue.put_nowait((i, exc))
            queue.put_nowait((i, None))

        tasks = [asyncio.create_task(pump(i, ids)) for i, ids in enumerate(prompts)]
        try:
            for _ in range(len(tasks)):
                while True:
                    i, item = await queue.get()
                    if item is None:
                        break
                    if isinstance(item, Exception):
                        raise item
                    yield i, item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            reservation.release()

    async def _collect(self, index: int, ids: list[int], params: Any, t0: float) -> Choice:
        choice = Choice(index, prompt_tokens=len(ids))
        parts: list[str] = []
        logprobs: list[Any] = []
        async with aclosing(self._sequence(ids, params, t0)) as outs:
            async for out in outs:
                parts.append(out.new_text)
                choice.completion_tokens, choice.finish_reason = out.completion_tokens, out.finish_reason
                logprobs.extend(out.new_logprobs or [])
        choice.text = "".join(parts)
        choice.token_logprobs = logprobs if params.logprobs is not None else None
        return choice

    async def _sequence(self, ids: list[int], params: Any, t0: float) -> AsyncIterator[Any]:
        """One sequence's outputs from the engine, timed into the metrics."""
        reason, last, first = "abort", t0, True
        loop = self.loop
        if loop is None:
            self._engine()  # raises the 503 of the engine's state
        try:
            async with aclosing(loop.stream_async(ids, params)) as outs:
                async for out in outs:
                    if out.new_token_ids:
                        now = time.perf_counter()
                        (self.metrics.ttft if first else self.metrics.itl).observe(now - last)
                        self.metrics.generated_tokens.inc(len(out.new_token_ids))
                        first, last = False, now
                    if out.finished:
                        reason = out.finish_reason or "stop"
                    yield out
        except Exception:
            reason = "error"
            raise
        finally:
            self.metrics.sequences.labels(reason).inc()
            now = time.monotonic()
            self._done_times = [t for t in self._done_times[-255:] if now - t < 10.0] + [now]
