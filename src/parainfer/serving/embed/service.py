"""The inference service behind the routes: tokens -> batcher -> replicas -> outputs.

``InferenceService.infer(texts, request)`` is the one call a route makes. It counts tokens
(the batcher's sort key and the ``usage`` numbers), queues the inputs, and waits for their
outputs, the client's disconnect, or the timeout, whichever comes first. Queued inputs of a
request that times out or whose client left are dropped from the queue at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response

from parainfer.executors import make_executor
from parainfer.models.base import Predictor
from parainfer.serving.autoscale import Autoscaler
from parainfer.serving.embed.batcher import DynamicBatcher, Item, QueueFull
from parainfer.serving.config import ServeConfig
from parainfer.openai.errors import ApiError
from parainfer.serving.http.errors import request_id
from parainfer.serving.http.limits import capped_texts, check_count
from parainfer.serving.metrics import ServingMetrics
from parainfer.serving.embed.batch_router import BatchRouter, InputFailed, ReplicaUnavailable

log = logging.getLogger(__name__)
# Requests at most this large are counted and encoded on the event loop: it costs well under a
# millisecond there, less than the hop to the CPU thread (which fragments batches under load).
INLINE_CHARS = 1 << 14
INLINE_OUTPUTS = 64


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


class InferenceService:
    """Owns the batcher, the batch router and the metrics of one app (a ``serving.service.Service``).

    Args:
        config: the server settings.
        predictor: an unloaded predictor (its ``token_lengths`` runs here, ``predict`` in workers).
        metrics: where to count batches, queue depth and replica events.
    """

    def __init__(self, config: ServeConfig, predictor: Predictor, metrics: ServingMetrics):
        self.config, self.predictor, self.metrics = config, predictor, metrics
        predictor.deterministic = bool(config.deterministic)  # canonical widths (models.hf_common), shipped to workers
        self.window = predictor.window()
        self._told_numerics = False
        executor = make_executor(config.executor, predictor, config.workers, config.threads_per_worker,
                                 address=config.address, cpus_per_worker=config.cpus_per_worker,
                                 gpus_per_worker=config.gpus_per_worker)
        self.pool = BatchRouter(executor, config.max_in_flight_per_replica, config.retries,
                                on_capacity=self._on_capacity, on_batch_done=self._on_batch_done,
                                on_restart=lambda w: metrics.restarts.labels(str(w)).inc(),
                                initial=config.min_replicas)
        self.autoscaler = Autoscaler(self.pool, config.autoscale_policy(), metrics, ongoing=lambda: self.batcher.depth)
        self.batcher = DynamicBatcher(self._dispatch, self.pool.free_slots, config.max_batch_size,
                                      config.max_wait_ms / 1000.0, config.max_queue, config.group_by_length,
                                      max_batch_tokens=config.max_batch_tokens, idle_replicas=self.pool.idle_replicas,
                                      max_age_s=config.max_queue_age_ms / 1000 if config.max_queue_age_ms else None)
        self._task: asyncio.Task | None = None
        self.tokenizer_loaded = False  # set by _load_tokenizer (CPU thread) once counting is cheap
        # One thread for the CPU work of requests (tokenising, encoding replies): off the event
        # loop, and one at a time (HF fast tokenizers are not safe to share between threads).
        self._cpu = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parainfer-cpu")
        self._done_times: list[float] = []  # recent completions, for the Retry-After estimate
        for w in range(config.workers):  # the series exist (at 0) from the first scrape
            metrics.busy.labels(str(w))
            metrics.restarts.labels(str(w))

    async def start(self) -> None:
        """Start the workers (they load in the background), the batching loop, and the loading of
        the server's own tokenizer in the CPU thread (``ready`` waits for it)."""
        self.pool.start()
        self.autoscaler.start()
        self._task = asyncio.create_task(self.batcher.run(), name="parainfer-batcher")
        self._tokenizer_task = asyncio.get_running_loop().run_in_executor(self._cpu, self._load_tokenizer)

    def _load_tokenizer(self) -> None:
        """Count one text, so the tokenizer (and the libraries it imports: transformers, torch) is
        loaded here and not by the first request on the event loop: that import held the loop
        for ~20 s on a loaded 2-core machine (as profiled), stalling every request."""
        try:
            self.predictor.token_lengths(["warm up"])
        except Exception as exc:  # noqa: BLE001 - requests will meet (and report) the same error
            log.warning("the tokenizer did not load at start: %s: %s", type(exc).__name__, exc)
        self.tokenizer_loaded = True

    async def stop(self) -> None:
        """Fail what is still queued, stop the loop, stop the workers."""
        await self.autoscaler.stop()
        self.batcher.fail_all(ReplicaUnavailable("server is shutting down"))
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.to_thread(self.pool.stop)
        self._cpu.shutdown(wait=False, cancel_futures=True)

    @property
    def ready(self) -> bool:
        """Every replica loaded at least once and one can take batches now."""
        return self.pool.all_loaded_once and self.pool.ready_count > 0 and self.tokenizer_loaded

    @property
    def queue_depth(self) -> int:
        return self.batcher.depth

    def health(self) -> dict[str, Any]:
        """The /health body: status ok | loading | failed, replica counts and details, and
        ``autoscaling`` (``Autoscaler.describe``: replicas by state, desired, range, events)."""
        pool = self.pool
        counts = pool.replica_counts()
        return {"status": "ok" if self.ready else ("failed" if pool.all_dead else "loading"),
                "replicas_ready": pool.ready_count, "replicas": sum(r.active for r in pool.replicas),
                "queue_depth": self.batcher.depth, **self.numerics(), "replica_state": pool.describe(),
                "autoscaling": self.autoscaler.describe(counts)}

    def numerics(self) -> dict[str, Any]:
        """``{"deterministic": bool, "batch_invariance": {...}}`` for /health: whether a text's output
        bits are independent of its batch-mates (and equal to ``parainfer run``'s), from the
        replicas' load-time probe (``HFModel.probe_batch_invariance``: mode canonical-width or
        per-text, and why). False, with the reason, when not asked (``--no-deterministic``), when
        the backend does not check it, or while no replica has loaded."""
        infos = self.pool.model_info()
        found = [info.get("batch_invariance") for info in infos]
        if not infos:
            body = {"deterministic": False, "reason": "no replica has loaded the model yet"}
        elif any(f is None for f in found):
            cls = next(info.get("class", "?") for info, f in zip(infos, found) if f is None)
            body = {"deterministic": False, "reason": f"the {cls} backend does not check that its outputs are "
                                                      "independent of their batch-mates"}
        elif len({(f["deterministic"], f["mode"]) for f in found}) > 1:
            body = {"deterministic": False, "reason": "replicas disagree: "
                    + ", ".join(sorted({f["mode"] for f in found}))}
        else:
            body = dict(found[0])
        return {"deterministic": bool(body.pop("deterministic")), "batch_invariance": body}


    def token_lengths(self, texts: list[str]) -> list[int]:
        """Model tokens per text, truncated to the window (the cost the model will pay)."""
        lengths = self.predictor.token_lengths(texts)
        return [min(n, self.window) for n in lengths] if self.window else lengths

    async def infer(self, texts: list[str], request: Request) -> tuple[list[dict[str, Any]], int]:
        """Run ``texts`` through the model; returns (one output dict per text in order, tokens).

        The count is checked and queue room reserved before any text is touched; the texts are
        then checked, capped (``limits.capped_texts``) and counted: in the CPU thread, off the
        event loop, unless they hold at most ``INLINE_CHARS`` characters in all.

        Raises:
            ApiError: 413 too many inputs, 429 queue full, 400 a lone surrogate, 503 no replica,
                504 timeout, 422 the model raised on an input.
            ClientGone: the client disconnected (its queued inputs are dropped).
        """
        limit = min(self.config.max_inputs_per_request, self.config.max_queue)
        check_count(len(texts), limit, "inputs", "--max-inputs-per-request / --max-queue")
        if self.pool.all_dead:
            raise ApiError(503, "no replica could load the model; see the server log", code="no_replica")
        try:
            self.batcher.reserve(len(texts))
        except QueueFull as e:
            raise ApiError(429, f"server busy: {e}; retry after {e.retry_after_s}s", code="queue_full",
                           headers={"Retry-After": str(e.retry_after_s)}) from None
        try:
            if self.tokenizer_loaded and sum(map(len, texts)) <= INLINE_CHARS:  # cheaper than a thread hop
                texts, tokens = self._prepare(texts)
            else:
                texts, tokens = await asyncio.get_running_loop().run_in_executor(self._cpu, self._prepare, texts)
        except BaseException:
            self.batcher.release(len(texts))
            raise
        items = self.batcher.submit(texts, tokens, reserved=True)
        self.metrics.queue_depth.set(self.batcher.depth)
        try:
            outputs = await self._wait(items, request)
        finally:
            if self.batcher.cancel(items):
                self.metrics.queue_depth.set(self.batcher.depth)
        request.state.server_timing = server_timing(items)
        return outputs, sum(tokens)

    def _prepare(self, texts: list[str]) -> tuple[list[str], list[int]]:
        """(capped texts, their token lengths); in the CPU thread, or inline when small."""
        texts = capped_texts(texts, self.window)
        return texts, self.token_lengths(texts)

    async def render(self, build: Callable[[], Any], items: int, request: Request | None = None) -> Response:
        """A JSON response of ``build()`` (``items`` outputs), built and encoded with orjson; in the
        CPU thread when large: a reply of 1,024 x 384 floats must not hold the event loop.
        ``request``: the one ``infer`` answered; its ``server_timing`` becomes the
        ``Server-Timing`` header."""
        def encode() -> bytes:
            return orjson.dumps(build(), option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS, default=str)
        timing = getattr(request.state, "server_timing", None) if request is not None else None
        headers = {"Server-Timing": timing} if timing else None
        if items <= INLINE_OUTPUTS:
            return Response(encode(), media_type="application/json", headers=headers)
        body = await asyncio.get_running_loop().run_in_executor(self._cpu, encode)
        return Response(body, media_type="application/json", headers=headers)

    async def _wait(self, items: list[Item], request: Request) -> list[dict[str, Any]]:
        results = asyncio.gather(*(it.future for it in items), return_exceptions=True)
        await wait_or_give_up(results, request, self.config.request_timeout_s)
        outputs = results.result()
        rid = request_id(request.scope)
        for i, out in enumerate(outputs):
            if isinstance(out, InputFailed):
                log.warning("request %s: the model failed on input %d: %s", rid, i, out)
                raise ApiError(422, f"the model failed on input {i} (request id {rid}; the reason is in the "
                                    "server log)", param=f"input.{i}", code="model_error")
            if isinstance(out, ReplicaUnavailable):
                log.warning("request %s: input %d could not be run: %s", rid, i, out)
                raise ApiError(503, f"input {i} could not be run: {out.public} (request id {rid})",
                               code="replica_unavailable", headers={"Retry-After": "1"})
            if isinstance(out, BaseException):
                log.error("request %s: input %d failed: %s: %s", rid, i, type(out).__name__, out)
                raise ApiError(503, f"input {i} could not be run (request id {rid}; see the server log)",
                               code="unavailable", headers={"Retry-After": "1"})
        return outputs

    # -- callbacks from the batcher and the pool (on the loop) --------------------------------
    def _dispatch(self, batch: list[Item]) -> None:
        self.metrics.observe_batch([it.tokens for it in batch], [it.t_dispatched - it.t_enqueued for it in batch])
        self.metrics.queue_depth.set(self.batcher.depth)
        self.pool.dispatch(batch)

    def _on_capacity(self) -> None:
        self.metrics.replicas_ready.set(self.pool.ready_count)
        if not self._told_numerics and self.pool.all_loaded_once:
            self._told_numerics = True
            numerics = self.numerics()
            # On uvicorn's logger, so the line shows with its start-up lines ("INFO: ...").
            logging.getLogger("uvicorn.error").info("deterministic: %s (%s)", str(numerics["deterministic"]).lower(),
                                                    ", ".join(f"{k} {v}" for k, v in
                                                              numerics["batch_invariance"].items()))
        self.batcher.wake()

    def _on_batch_done(self, replica: int, size: int, busy_s: float, computed: int | None) -> None:
        self.metrics.busy.labels(str(replica)).inc(busy_s)
        if computed is not None:
            self.metrics.batch_tokens.labels("computed").inc(computed)
        now = time.monotonic()
        self._done_times.append(now)
        self._done_times = [t for t in self._done_times[-64:] if now - t < 10.0]
        span = now - self._done_times[0] if len(self._done_times) > 1 else 0.0
        self.batcher.items_per_second = size * len(self._done_times) / span if span > 0 else 0.0


def server_timing(items: list[Item]) -> str:
    """The ``Server-Timing`` header (W3C Server Timing) of a request whose inputs are ``items``
    (all answered), in milliseconds, each the slowest of its inputs: ``queue`` (queued until its
    batch was cut), ``compute`` (its batch on the replica), ``hop`` (cut until answered, less
    compute: the trip to and from the replica and any wait there). Two descriptions order
    requests: ``arrival`` is the arrival number of the request's first input in the batcher's
    queue (``Item.key``), ``batch`` the number of the last batch its inputs went in
    (``Item.batch``, in the order batches were cut)."""
    queue = max(it.t_dispatched - it.t_enqueued for it in items)
    compute = max(it.compute_s for it in items)
    hop = max(it.t_done - it.t_dispatched - it.compute_s for it in items)
    return (f"queue;dur={1000 * queue:.1f}, compute;dur={1000 * compute:.1f}, hop;dur={1000 * max(0.0, hop):.1f}, "
            f'arrival;desc="{items[0].key}", batch;desc="{max(it.batch for it in items)}"')


async def _disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body was read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def wait_or_give_up(work: asyncio.Future, request: Request, timeout_s: float, hint: str = "") -> None:
    """Wait until ``work`` is done; if the client disconnects first or ``timeout_s`` passes,
    cancel ``work`` (and wait for the cancellation to settle) and raise.

    Raises:
        ClientGone: the client closed the connection.
        ApiError: 504 when ``timeout_s`` seconds passed (``hint`` is appended to the message).
    """
    gone = asyncio.create_task(_disconnected(request))
    try:
        done, _ = await asyncio.wait({work, gone}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if work in done:
        return
    work.cancel()
    await asyncio.gather(work, return_exceptions=True)
    if gone in done:
        raise ClientGone()
    raise ApiError(504, f"request not answered within {timeout_s}s (--request-timeout-s{hint})", code="timeout")
