"""The generation service behind /v1/completions and /v1/chat/completions (``--task generate``).

One :class:`~parainfer.generation.LLMEngine` runs in the server process, stepped by an
:class:`~parainfer.generation.EngineLoop` thread; no worker processes. Continuous batching
happens inside the engine (sequences join and leave the running batch at every step), so one
engine already batches every request the server holds; a second replica would hold a second
copy of the weights and KV cache and split the batch, making each step's matmuls smaller, on
the same cores. torch releases the GIL inside the forward, so the event loop keeps serving
HTTP while the engine thread computes.

A route calls, in order: ``prompts_from_*`` (token ids), ``params`` (SamplingParams),
``admit`` (400 too long, 429 full, 503 not loaded), then ``complete`` (non-streaming: waits for
every sequence, the client's disconnect or the timeout) or ``stream`` (async iterator of
``(prompt index, RequestOutput)``). Leaving either early (disconnect, timeout, cancel) aborts
the request's sequences in the engine.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from starlette.requests import Request

from parainfer.errors import UsageError
from parainfer.serving.config import ServeConfig
from parainfer.serving.errors import ApiError
from parainfer.serving.metrics import ServingMetrics
from parainfer.serving.service import wait_or_give_up

log = logging.getLogger(__name__)
CHAT_DEFAULT_MAX_TOKENS = 256


@dataclass
class Choice:
    """One prompt's finished sequence."""

    index: int
    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class GenerationService:
    """Owns the engine, its loop thread, admission and the generation metrics of one app.

    Args:
        config: the server settings (``model``, ``dtype``, ``max_num_seqs``, ``max_queue``,
            ``request_timeout_s``, ``threads_per_worker``).
        metrics: where time to first token, inter-token latency and token counts go.
        engine_factory: builds the engine (runs in a loader thread); default loads
            ``config.model`` or SmolLM2-135M-Instruct.
    """

    def __init__(self, config: ServeConfig, metrics: ServingMetrics,
                 engine_factory: Callable[[], Any] | None = None) -> None:
        self.config, self.metrics = config, metrics
        self._factory = engine_factory or self._build_engine
        self.loop: Any = None  # EngineLoop once loaded
        self.load_error: BaseException | None = None
        self.running = 0  # sequences in the engine (streams being consumed)
        self._done_times: list[float] = []  # recent sequence ends, for Retry-After
        for reason in ("stop", "length", "abort", "error"):
            metrics.sequences.labels(reason)

    # ---- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the engine in a background thread (/health says 503 until it is up)."""
        threading.Thread(target=self._load, name="parainfer-engine-load", daemon=True).start()

    async def stop(self) -> None:
        """Stop the engine thread; sequences still in it end with an error (uvicorn has already
        waited for the requests in flight)."""
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
            self.loop = EngineLoop(self._factory()).start()
        except BaseException as exc:  # noqa: BLE001 - reported by /health and every request
            log.exception("generation engine failed to load")
            self.load_error = exc

    @property
    def ready(self) -> bool:
        return self.loop is not None and self.loop.error is None

    @property
    def queue_depth(self) -> int:
        return self.running

    def health(self) -> dict[str, Any]:
        """The /health body: status ok | loading | failed, plus engine numbers once loaded."""
        failed = self.load_error or (self.loop.error if self.loop is not None else None)
        body: dict[str, Any] = {"status": "ok" if self.ready else ("failed" if failed else "loading"),
                                "task": "generate", "sequences_running": self.running}
        if failed is not None:
            body["error"] = f"{type(failed).__name__}: {failed}"
        if self.loop is not None:
            engine = self.loop.engine
            body.update(max_model_len=engine.max_model_len, max_num_seqs=engine.config.max_num_seqs,
                        dtype=engine.config.dtype, engine_stats=dict(engine.stats))
        return body

    # ---- request preparation -------------------------------------------------------------------

    def _engine(self) -> Any:
        if not self.ready:
            if self.load_error is not None or (self.loop is not None and self.loop.error is not None):
                raise ApiError(503, "the generation engine failed; see /health and the server log", code="no_engine")
            raise ApiError(503, "the model is still loading; retry shortly (GET /health says 200 when ready)",
                           code="loading", headers={"Retry-After": "5"})
        return self.loop.engine

    def prompts_from_completion(self, prompt: str | list[str] | list[int] | list[list[int]]) -> list[list[int]]:
        """Token ids per prompt: text is tokenized as is (no chat template), ids pass through."""
        engine = self._engine()
        if isinstance(prompt, str):
            prompt = [prompt]
        if prompt and isinstance(prompt[0], int):
            prompt = [prompt]  # type: ignore[list-item]
        prompts = [engine.tokenizer.encode(p) if isinstance(p, str) else [int(t) for t in p] for p in prompt]
        vocab = len(engine.tokenizer)
        for i, ids in enumerate(prompts):
            if not ids:
                raise ApiError(400, f"prompt {i} is empty; give some text", param="prompt", code="empty_prompt")
            if not all(0 <= t < vocab for t in ids):
                raise ApiError(400, f"prompt {i} has token ids outside [0, {vocab})", param="prompt",
                               code="invalid_token")
        return prompts

    def prompt_from_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of ``messages`` with the model's chat template and the assistant prompt."""
        try:
            return self._engine().format_chat(messages)
        except ApiError:
            raise
        except Exception as exc:  # a template that rejects the roles/order given
            raise ApiError(400, f"the model's chat template rejected the messages: {exc}", param="messages",
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
        is room for ``len(prompts)`` more sequences (429 with Retry-After)."""
        engine = self._engine()
        for i, ids in enumerate(prompts):
            try:
                engine.check_fits(len(ids), params.max_tokens)
            except UsageError as exc:
                which = f"prompt {i}: " if len(prompts) > 1 else ""
                raise ApiError(400, f"{which}{exc}; shorten the prompt or lower max_tokens", param="max_tokens",
                               code="context_length_exceeded") from None
        limit = self.config.max_queue
        if self.running + len(prompts) > limit:
            retry = self._retry_after_s(self.running + len(prompts) - limit)
            raise ApiError(429, f"server busy: {self.running} sequences in the engine, at most {limit} "
                                f"(--max-queue); retry after {retry}s", code="queue_full",
                           headers={"Retry-After": str(retry)})

    def _retry_after_s(self, excess: int) -> int:
        now = time.monotonic()
        recent = [t for t in self._done_times if now - t < 10.0]
        rate = len(recent) / (now - recent[0]) if len(recent) > 1 and now > recent[0] else 0.0
        return max(1, min(60, math.ceil(excess / rate))) if rate > 0 else 1

    # ---- running -------------------------------------------------------------------------------

    async def complete(self, prompts: list[list[int]], params: Any, request: Request) -> list[Choice]:
        """Generate every prompt; returns one Choice each, in order.

        Raises:
            ApiError: 504 past --request-timeout-s, 503 the engine failed.
            ClientGone: the client disconnected (its sequences were aborted).
        """
        t0 = time.perf_counter()
        work = asyncio.gather(*(self._collect(i, ids, params, t0) for i, ids in enumerate(prompts)))
        await wait_or_give_up(work, request, self.config.request_timeout_s, "; or stream it")
        try:
            return work.result()
        except ApiError:
            raise
        except Exception as exc:
            raise ApiError(503, f"generation failed: {type(exc).__name__}: {exc}", code="engine_error") from None

    async def stream(self, prompts: list[list[int]], params: Any) -> AsyncIterator[tuple[int, Any]]:
        """Yield ``(prompt index, RequestOutput)`` as the engine produces them, all prompts
        interleaved. Closing the iterator early aborts every sequence still running.

        Raises:
            Exception: what the engine raised (its loop failed or shut down).
        """
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
        self.running += 1
        self.metrics.sequences_running.set(self.running)
        reason, last, first = "abort", t0, True
        try:
            async with aclosing(self.loop.stream_async(ids, params)) as outs:
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
            self.running -= 1
            self.metrics.sequences_running.set(self.running)
            self.metrics.sequences.labels(reason).inc()
            now = time.monotonic()
            self._done_times = [t for t in self._done_times[-255:] if now - t < 10.0] + [now]
