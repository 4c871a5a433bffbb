"""EngineLoop: steps an LLMEngine in a background thread so a server can stream from it.

Requests arrive from any thread (``submit``, a blocking iterator) or from asyncio
(``stream_async``, an async iterator); every engine step delivers each request's
:class:`RequestOutput` to its own queue. The thread sleeps while there is no work. A FastAPI
example: docs/generation.md, "Using it".
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator

from parainfer.generation.engine import LLMEngine
from parainfer.generation.outputs import RequestOutput
from parainfer.generation.sampling_params import SamplingParams

log = logging.getLogger(__name__)


class EngineLoop:
    """Owns the thread that calls ``engine.step()``; nothing else may call ``step`` meanwhile.

    Args:
        engine: the engine to drive.
        idle_wait_s: how long the thread sleeps when idle before it looks again (a new
            request wakes it at once).
        on_error: called (in the loop thread, before the waiting requests get the error, so
            that /health already says so when they see it) when a step raises: the engine's state may be broken, so the loop stops and its owner
            builds a new engine (``GenerationService`` does). A failure of one sequence does
            not get here: the engine fails that sequence alone.
    """

    def __init__(self, engine: LLMEngine, idle_wait_s: float = 0.5,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        self.engine = engine
        self._idle_wait_s = idle_wait_s
        self._on_error = on_error
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> EngineLoop:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="parainfer-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float | None = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> EngineLoop:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def submit(
        self, prompt: str | list[int], params: SamplingParams | None = None, request_id: str | None = None
    ) -> Iterator[RequestOutput]:
        """Queue a request; returns a blocking iterator over its outputs (last one finished).

        Raises:
            UsageError: at once, for a prompt that does not fit (see ``LLMEngine.add_request``).
        """
        q: queue.Queue = queue.Queue()
        rid = self.engine.add_request(prompt, params, request_id, on_output=q.put)
        self._wake.set()
        return self._drain(q, rid)

    async def stream_async(
        self, prompt: str | list[int], params: SamplingParams | None = None, request_id: str | None = None
    ) -> AsyncIterator[RequestOutput]:
        """Queue a request; async-iterate its outputs. Cancelling the iteration aborts the request."""
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()
        rid = self.engine.add_request(
            prompt, params, request_id, on_output=lambda out: loop.call_soon_threadsafe(q.put_nowait, out)
        )
        self._wake.set()
        finished = False
        try:
            while not finished:
                out = await q.get()
                if isinstance(out, BaseException):
                    raise out
                finished = out.finished
                yield out
        finally:
            if not finished:
                self.engine.abort_request(rid)
                self._wake.set()

    def add(self, prompt: str | list[int], params: SamplingParams | None, request_id: str,
            on_output: Callable[[RequestOutput], None]) -> str:
        """Queue a request whose outputs (or the exception that ended it) go to ``on_output``,
        called in the loop thread; wakes the loop. Returns the request id.

        Raises:
            UsageError: at once, for a prompt that does not fit (see ``LLMEngine.add_request``).
        """
        rid = self.engine.add_request(prompt, params, request_id, on_output=on_output)
        self._wake.set()
        return rid

    def abort(self, request_id: str) -> None:
        self.engine.abort_request(request_id)
        self._wake.set()

    def _drain(self, q: queue.Queue, rid: str) -> Iterator[RequestOutput]:
        while True:
            out = q.get()
            if isinstance(out, BaseException):
                raise out
            yield out
            if out.finished:
                return

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.engine.has_unfinished():
                self._wake.wait(self._idle_wait_s)
                self._wake.clear()
                continue
            try:
                self.engine.step()
            except BaseException as exc:  # surface to every waiting caller, then stop
                log.exception("generation engine step failed")
                self.error = exc
                if self._on_error is not None:  # first: a client that sees the error finds /health rebuilding
                    self._on_error(exc)
                self.engine.fail_all(exc)
                return
