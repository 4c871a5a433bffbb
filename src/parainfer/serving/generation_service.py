"""The generation service behind /v1/completions and /v1/chat/completions (``--task generate``).

One :class:`~parainfer.generation.LLMEngine` runs in the server process, stepped by an
:class:`~parainfer.generation.EngineLoop` thread; no worker processes. Continuous batching
happens inside the engine (sequences join and leave the running batch at every step), so one
engine already batches every request the server holds; a second replica would hold a second
copy of the weights and KV cache and split the batch, making each step's matmuls smaller, on
the same cores. torch releases the GIL inside the forward, so the event loop keeps serving
HTTP while the engine thread computes.

A route calls ``admit_completion`` / ``admit_chat`` (in this order: 503 not loaded, 413 more
prompts than ``--max-queue`` could ever hold, 400 a prompt over its character budget, 429 no
room: capacity for the request's sequences is *reserved* here, before any tokenising; then, in
the CPU thread, off the event loop: tokenising, 400 a lone surrogate or too long for the
window), then ``complete`` (non-streaming: waits for every sequence, the client's disconnect or
the timeout) or ``stream`` (async iterator of ``(prompt index, RequestOutput)``), handing them
the reservation, which they release when the request ends. Leaving either early (disconnect,
timeout, cancel) aborts the request's sequences in the engine.

Fault isolation: a sequence that fails in the engine fails alone (see ``LLMEngine.step``). If a
step itself raises, the engine's state may be broken: the EngineLoop fails what it holds and
stops, and this service builds a new engine with the same factory (/health says
``"rebuilding"``, 503, meanwhile; requests get 503 with ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from starlette.requests import Request

from parainfer.errors import UsageError
from parainfer.serving.config import ServeConfig
from parainfer.serving.errors import ApiError, request_id
from parainfer.serving.limits import check_count, check_prompt_chars, check_text
from parainfer.serving.metrics import ServingMetrics
from parainfer.serving.service import wait_or_give_up

log = logging.getLogger(__name__)
CHAT_DEFAULT_MAX_TOKENS = 256
REBUILD_RETRY_AFTER_S = 10


@dataclass
class Choice:
    """One prompt's finished sequence."""

    index: int
    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Reservation:
    """Room for ``count`` sequences, held from admission until the request ends; ``release``
    is idempotent (a stream that never started releases it when its response closes)."""

    def __init__(self, service: GenerationService, count: int) -> None:
        self.service, self.count, self.released = service, count, False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.service._set_running(self.service.running - self.count)


@dataclass
class Admitted:
    """A request past admission: its prompt ids, SamplingParams and reservation."""

    prompts: list[list[int]]
    params: Any
    reservation: Reservation


class GenerationService:
    """Owns the engine, its loop thread, admission and the generation metrics of one app.

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
        for reason in ("stop", "length", "abort", "error"):
            metrics.sequences.labels(reason)

    # ---- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the engine in a background thread (/health says 503 until it is up)."""
        threading.Thread(target=self._load, name="parainfer-engine-load", daemon=True).start()

    async def stop(self) -> None:
        """Stop the engine thread; sequences still in it end with an error (uvicorn has already
        waited for the requests in flight)."""
        self.state = "stopped"
        self._cpu.shutdown(wait=False, cancel_futures=True)
        loop = self.loop
        if loop is None:
            return
        await asyncio.to_thread(loop.stop)
        loop.engine.fail_all(ConnectionAbortedError("server is shutting down"))

    def _build_engine(self) -> Any:
        from parainfer.generation import LLMEngine, ensure_smollm2

        path = ensure_smollm2() if self.config.model in (None, "default") else Path(self.config.model)
        dtype = "float32" if self.config.dtype == "auto" else self.config.dtype
        return LLMEngine(path, dtype=dtype, max_num_seqs=self.config.max_num_seqs,
                         threads=self.config.threads_per_worker)

    def _load(self) -> None:
        from parainfer.generation import EngineLoop

        try:
            loop = EngineLoop(self._factory(), on_error=self._on_engine_error).start()
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

    @property
    def ready(self) -> bool:
        return self.state == "ok" and self.loop is not None and self.loop.error is None

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

    async def admit_completion(self, body: Any) -> Admitted:
        """Admit a /v1/completions body (see the module docstring for the order of checks)."""
        engine = self._engine()
        prompt = body.prompt
        prompt = [prompt] if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)) else prompt
        self._check_count(len(prompt))
        for i, p in enumerate(prompt):
            if isinstance(p, str):
                check_prompt_chars(len(p), engine.max_model_len, f"prompt.{i}" if len(prompt) > 1 else "prompt")
        return await self._admit(len(prompt), lambda: self.prompts_from_completion(prompt), body, 16)

    async def admit_chat(self, body: Any, messages: list[dict[str, str]]) -> Admitted:
        """Admit a /v1/chat/completions body with its ``messages`` as plain dicts."""
        engine = self._engine()
        check_prompt_chars(sum(len(m["content"]) for m in messages), engine.max_model_len, "messages")
        return await self._admit(1, lambda: [self.prompt_from_chat(messages)], body, None)

    async def _admit(self, count: int, tokenize: Callable[[], list[list[int]]], body: Any,
                     default_max_tokens: int | None) -> Admitted:
        reservation = self.reserve(count)
        try:
            prompts, params = await asyncio.get_running_loop().run_in_executor(
                self._cpu, lambda: self._prepare(tokenize, body, default_max_tokens))
        except BaseException:
            reservation.release()
            raise
        return Admitted(prompts, params, reservation)

    def _prepare(self, tokenize: Callable[[], list[list[int]]], body: Any,
                 default_max_tokens: int | None) -> tuple[list[list[int]], Any]:
        """Tokenise, build the SamplingParams and check every prompt fits (the CPU thread)."""
        prompts = tokenize()
        params = self.params(body, prompts, default_max_tokens)
        self._check_fits(prompts, params)
        return prompts, params

    def _check_count(self, count: int) -> None:
        limit = min(self.config.max_inputs_per_request, self.config.max_queue)
        check_count(count, limit, "prompts", "--max-inputs-per-request / --max-queue")

    def reserve(self, count: int) -> Reservation:
        """Take room for ``count`` sequences now (release it with ``Reservation.release``).

        Raises:
            ApiError: 413 more than ``--max-queue`` could ever hold, 429 no room now (Retry-After).
        """
        self._check_count(count)
        limit = self.config.max_queue
        if self.running + count > limit:
            retry = self._retry_after_s(self.running + count - limit)
            raise ApiError(429, f"server busy: {self.running} sequences admitted, at most {limit} "
                                f"(--max-queue); retry after {retry}s", code="queue_full",
                           headers={"Retry-After": str(retry)})
        self._set_running(self.running + count)
        return Reservation(self, count)

    def _set_running(self, value: int) -> None:
        self.running = value
        self.metrics.sequences_running.set(value)

    def prompts_from_completion(self, prompt: str | list[str] | list[int] | list[list[int]]) -> list[list[int]]:
        """Token ids per prompt: text is tokenized as is (no chat template), ids pass through."""
        engine = self._engine()
        if isinstance(prompt, str):
            prompt = [prompt]
        if prompt and isinstance(prompt[0], int):
            prompt = [prompt]  # type: ignore[list-item]
        vocab = len(engine.tokenizer)
        prompts = []
        for i, p in enumerate(prompt):
            if isinstance(p, str):
                check_text(p, f"prompt.{i}")
            ids = engine.tokenizer.encode(p) if isinstance(p, str) else [int(t) for t in p]
            if not ids:
                raise ApiError(400, f"prompt {i} is empty; give some text", param="prompt", code="empty_prompt")
            # over the window: _check_fits refuses it, naming its length; its ids need no look
            if len(ids) <= engine.max_model_len and not all(0 <= t < vocab for t in ids):
                raise ApiError(400, f"prompt {i} has token ids outside [0, {vocab})", param="prompt",
                               code="invalid_token")
            prompts.append(ids)
        return prompts

    def prompt_from_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of ``messages`` with the model's chat template and the assistant prompt."""
        for i, m in enumerate(messages):
            check_text(m["content"], f"messages.{i}.content")
        try:
            return self._engine().format_chat(messages)
        except ApiError:
            raise
        except Exception as exc:  # a template that rejects the roles/order given
            from jinja2 import TemplateError

            reason = f": {exc}" if isinstance(exc, TemplateError) else " (see the server log)"
            log.warning("chat template rejected the messages: %s: %s", type(exc).__name__, exc)
            raise ApiError(400, f"the model's chat template rejected the messages{reason}", param="messages",
                           code="invalid_messages") from None

    def params(self, body: Any, prompts: list[list[int]], default_max_tokens: int | None) -> Any:
        """SamplingParams from the request fields. ``default_max_tokens`` None: the rest of the
        context window, at most CHAT_DEFAULT_MAX_TOKENS."""
        from parainfer.generation import SamplingParams

        max_tokens = getattr(body, "max_completion_tokens", None) or body.max_tokens
        if max_tokens is None:
            room = self._engine().max_model_len - max(len(p) for p in prompts)
            max_tokens = default_max_tokens or max(1, min(CHAT_DEFAULT_MAX_TOKENS, room))
        try:
            return SamplingParams(max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
                                  seed=body.seed, stop=body.stop or [], ignore_eos=body.ignore_eos)
        except UsageError as exc:
            raise ApiError(400, str(exc), code="invalid_sampling") from None

    def admit(self, prompts: list[list[int]], params: Any) -> None:
        """Raise ApiError unless every prompt fits (400, naming prompt and max_tokens) and there
        is room for ``len(prompts)`` more sequences (413 never, 429 not now; reserves nothing:
        routes use ``admit_completion``/``admit_chat``, which do)."""
        self._check_fits(prompts, params)
        self._check_count(len(prompts))
        if self.running + len(prompts) > self.config.max_queue:
            self.reserve(len(prompts)).release()  # raises the 429

    def _check_fits(self, prompts: list[list[int]], params: Any) -> None:
        engine = self._engine()
        for i, ids in enumerate(prompts):
            try:
                engine.check_fits(len(ids), params.max_tokens)
            except UsageError as exc:
                which = f"prompt {i}: " if len(prompts) > 1 else ""
                raise ApiError(400, f"{which}{exc}; shorten the prompt or lower max_tokens", param="max_tokens",
                               code="context_length_exceeded") from None

    def _retry_after_s(self, excess: int) -> int:
        now = time.monotonic()
        recent = [t for t in self._done_times if now - t < 10.0]
        rate = len(recent) / (now - recent[0]) if len(recent) > 1 and now > recent[0] else 0.0
        return max(1, min(60, math.ceil(excess / rate))) if rate > 0 else 1

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

    def _take(self, count: int) -> Reservation:
        """Room for ``count`` sequences without a capacity check (admission was done before)."""
        self._set_running(self.running + count)
        return Reservation(self, count)

    async def _collect(self, index: int, ids: list[int], params: Any, t0: float) -> Choice:
        choice = Choice(index, prompt_tokens=len(ids))
        parts: list[str] = []
        async with aclosing(self._sequence(ids, params, t0)) as outs:
            async for out in outs:
                parts.append(out.new_text)
                choice.completion_tokens, choice.finish_reason = out.completion_tokens, out.finish_reason
        choice.text = "".join(parts)
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
