"""Structured output: token masks from a JSON schema (xgrammar), per sequence, in the batched step.

``GrammarCompiler`` turns a request's OpenAI ``response_format`` (``json_object`` or
``json_schema``; ``text`` or None is unconstrained) into a compiled grammar against the
engine's tokenizer, off the caller's thread: ``submit`` checks the schema's size and
references (``schema_check``, cheap) and hands the compile to a small pool of compile threads
(xgrammar releases the GIL while it compiles, so the engine keeps stepping; a compile still
that has used ``NICE_AFTER_S`` of CPU time lowers its thread's CPU priority); the caller waits
for its :class:`GrammarTicket` no longer than its own time budget
(``GrammarSettings.compile_timeout_s``; then :class:`GrammarTimeout`). Compiled grammars are
kept in an LRU cache bounded by bytes. Each sequence gets its own ``GrammarState`` (an
``xgrammar.GrammarMatcher``) that gives the sampler its token mask and advances with each
accepted token. JSON is emitted compactly (``any_whitespace=False``). References: xgrammar
(Dong et al. 2024, https://arxiv.org/abs/2411.15100); OpenAI's ``response_format``. How, why
xgrammar, and the limits: docs/generation.md, "Structured output", and docs/serving.md,
"Structured output: limits".
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import queue
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch

from parainfer.errors import UsageError
from parainfer.generation.schema_check import (
    SchemaError,
    SchemaLimits,
    SchemaTooLarge,
    check_schema_limits,
    parse_schema_text,
    schema_text,
)

__all__ = ["GrammarCompiler", "GrammarSettings", "GrammarState", "GrammarTicket", "GrammarTimeout", "SchemaError",
           "SchemaLimits", "SchemaTooLarge", "check_schema", "mask_logits", "schema_of"]
RESPONSE_FORMAT_TYPES = ("text", "json_object", "json_schema")
JSON_OBJECT_SCHEMA = '{"type": "object"}'
COMPILE_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_CPP_PREFIX = re.compile(r"^\[[^\]]*\]\s*\S+:\d+:\s*")
_TOKENIZER_INFO: dict[tuple, tuple[Any, Any]] = {}  # (id(tokenizer), vocab, eos) -> (tokenizer, TokenizerInfo)
_INFO_LOCK = threading.Lock()
NICE_AFTER_S = 0.5  # CPU seconds after which a compile yields the CPU (GrammarSettings.compile_niceness)
log = logging.getLogger(__name__)


class GrammarTimeout(UsageError):
    """The schema did not compile within the request's time budget (HTTP 408). The compile goes
    on in its thread unless no one else waits for it; a retry may find it compiled."""

    status = 408
    code = "response_format_timeout"


@dataclass(frozen=True)
class GrammarSettings:
    """How an engine compiles and keeps response formats.

    Attributes:
        compile_timeout_s: the longest a request waits for its schema's compile (queueing
            included); then it fails alone with :class:`GrammarTimeout`.
        cache_bytes: the compiled-grammar cache's budget in bytes (xgrammar's
            ``memory_size_bytes`` per grammar); least recently used grammars go first.
        compile_threads: compiles that may run at once (each on one core).
        compile_niceness: how much a compile that has used ``NICE_AFTER_S`` (0.5 s) of CPU time
            lowers its thread's CPU priority (Linux ``nice`` increment, 0-19; 0: never). Schemas that
            compile in milliseconds run at full speed; a long compile then takes only the CPU
            the engine leaves idle: on the 2-core machine under load, a 2-token completion ran
            at 1.08x its latency alone while a 20,000-value enum compiled at +10, 2.2x at 0.
        limits: the schema size limits checked before any compile (:class:`SchemaLimits`).
    """

    compile_timeout_s: float = 10.0
    cache_bytes: int = 128 << 20
    compile_threads: int = 2
    compile_niceness: int = 10
    limits: SchemaLimits = field(default_factory=SchemaLimits)

    def __post_init__(self) -> None:
        if not self.compile_timeout_s > 0:
            raise UsageError(f"grammar compile_timeout_s must be > 0, got {self.compile_timeout_s}")
        if self.cache_bytes < 0 or self.compile_threads < 1 or not 0 <= self.compile_niceness <= 19:
            raise UsageError(f"grammar cache_bytes must be >= 0, compile_threads >= 1 and compile_niceness in "
                             f"0..19, got {self.cache_bytes}, {self.compile_threads}, {self.compile_niceness}")


def response_format_kind(response_format: dict | None) -> str:
    """The kind of ``response_format`` ("text", "json_object" or "json_schema"), checked for shape
    only (no schema is parsed: ``SamplingParams`` calls this).

    Raises:
        UsageError: an unknown type, or a json_schema without a ``schema`` object (or JSON text).
    """
    if response_format is None:
        return "text"
    if not isinstance(response_format, dict) or response_format.get("type") not in RESPONSE_FORMAT_TYPES:
        got = response_format.get("type") if isinstance(response_format, dict) else response_format
        raise SchemaError(f"response_format type {got!r} is not supported; accepted: "
                          f"{', '.join(RESPONSE_FORMAT_TYPES)}")
    kind = response_format["type"]
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, (dict, str)):
            raise SchemaError("response_format json_schema needs json_schema.schema, a JSON schema object; got "
                              f"{type(schema).__name__}")
    return kind


def schema_of(response_format: dict | None, limits: SchemaLimits | None = None) -> str | None:
    """The JSON schema text a ``response_format`` asks for, checked; None when unconstrained.

    Args:
        response_format: OpenAI's ``{"type": "text" | "json_object" | "json_schema", ...}``;
            for "json_schema", ``json_schema.schema`` is the schema (a dict, or a JSON string).
        limits: the size limits to enforce (default ``SchemaLimits()``).

    Returns:
        The schema as JSON text, properties in the order given (the compile cache key),
        ``'{"type": "object"}'`` for json_object, None for text / None.

    Raises:
        SchemaTooLarge: the schema is over ``limits.max_bytes`` (HTTP 413).
        SchemaError: an unknown type, a json_schema without a ``schema`` object, a schema over
            another limit, a bad ``$ref`` or one with no finite value (see ``schema_check``).
    """
    kind = response_format_kind(response_format)
    if kind == "text":
        return None
    if kind == "json_object":
        return JSON_OBJECT_SCHEMA
    limits = limits or SchemaLimits()
    schema = response_format["json_schema"]["schema"]  # type: ignore[index]
    if isinstance(schema, str):
        schema = parse_schema_text(schema, limits)
    return check_schema_limits(schema, limits)


def _xgrammar() -> Any:
    """The xgrammar module; UsageError naming the extra to install when it is missing."""
    try:
        import xgrammar
    except ImportError:
        raise UsageError("structured output (response_format / --json-schema) needs the xgrammar package: "
                         "pip install 'parainfer[structured]'") from None
    return xgrammar


def _compile_options(schema: str) -> dict[str, Any]:
    # json_object: a free-form object, so properties are not closed (strict mode would allow only {}).
    return {"any_whitespace": False, "separators": (",", ":"), "strict_mode": schema != JSON_OBJECT_SCHEMA}


def _clean(exc: Exception) -> str:
    """xgrammar's message without its C++ "[time] file.cc:line:" prefix."""
    return _CPP_PREFIX.sub("", str(exc).strip()).splitlines()[0] if str(exc).strip() else type(exc).__name__


def check_schema(response_format: dict | None, limits: SchemaLimits | None = None) -> None:
    """Raise UsageError naming the problem unless xgrammar can turn ``response_format`` into a
    grammar (needs no tokenizer: the cheap check the CLI runs before any model loads). The
    schema is checked against ``limits`` (default ``SchemaLimits()``) first."""
    schema = schema_of(response_format, limits)
    if schema is None:
        return
    xgr = _xgrammar()
    try:
        xgr.Grammar.from_json_schema(schema, **_compile_options(schema))
    except Exception as exc:  # noqa: BLE001 - xgrammar raises RuntimeError for every bad schema
        raise SchemaError(f"the JSON schema cannot be compiled: {_clean(exc)}") from None


def load_schema_file(path: str) -> dict:
    """The ``response_format`` of a JSON-schema file (``--json-schema FILE``).

    Raises:
        UsageError: the file is missing or unreadable, not JSON, or not a JSON object.
    """
    from pathlib import Path

    try:
        schema = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"--json-schema {path!r} cannot be read: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"--json-schema {path!r} is not valid JSON: {exc}") from None
    except RecursionError:
        raise UsageError(f"--json-schema {path!r} is nested too deeply to parse") from None
    if not isinstance(schema, dict):
        raise UsageError(f"--json-schema {path!r} must hold a JSON schema object, got {type(schema).__name__}")
    return {"type": "json_schema", "json_schema": {"name": Path(path).stem, "schema": schema}}


class GrammarCache:
    """Compiled grammars by schema text, least recently used first out, bounded by bytes.

    Args:
        max_bytes: the budget; a grammar larger than it is not kept (its requests still get it).

    Attributes:
        bytes: the sizes of the grammars held, summed (xgrammar's ``memory_size_bytes`` plus the
            key's length).
        evictions: grammars dropped to make room so far.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = self.evictions = 0
        self._items: OrderedDict[str, tuple[Any, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> Any:
        """The grammar under ``key`` (now the most recently used), or None."""
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: str, grammar: Any, size: int) -> None:
        """Keep ``grammar`` (``size`` bytes) under ``key``, dropping the least recently used ones
        until the total fits ``max_bytes``; a grammar over ``max_bytes`` alone is not kept."""
        size += len(key)
        if key in self._items:
            self.bytes -= self._items.pop(key)[1]
        if size > self.max_bytes:
            return
        while self._items and self.bytes + size > self.max_bytes:
            self.bytes -= self._items.popitem(last=False)[1][1]
            self.evictions += 1
        self._items[key] = (grammar, size)
        self.bytes += size


@dataclass
class GrammarTicket:
    """A request's claim on one schema's compile: ``future`` gives the compiled grammar (or the
    UsageError naming why not); the request waits for it until ``deadline`` (time.monotonic());
    ``owner`` is the GrammarCompiler that issued it (wait with ``owner.wait``)."""

    key: str
    future: concurrent.futures.Future
    deadline: float
    owner: GrammarCompiler = field(repr=False)


class _Compile:
    """One schema's compile, queued or running, shared by every request that waits for it."""

    def __init__(self, key: str) -> None:
        self.key, self.future, self.waiters = key, concurrent.futures.Future(), 0


class GrammarCompiler:
    """Compiles response formats against one tokenizer, off the caller's thread; one per engine,
    thread-safe.

    Args:
        tokenizer: the engine's HF tokenizer.
        vocab_size: the model's logits width (may exceed ``len(tokenizer)``).
        eos_ids: the engine's end-of-sequence ids: a finished grammar allows only these.
        settings: time budget, cache size, compile threads and schema limits (default
            ``GrammarSettings()``).

    The xgrammar tokenizer info (about 0.3-5 s for a 49k vocabulary) is built on the first
    compile, or in the background by ``warm_up``. ``stats`` (for /metrics): cache hits, misses,
    evictions, bytes and entries; compiles, compile errors, timeouts, rejected schemas; the
    compile seconds as histogram buckets (``COMPILE_SECONDS_BUCKETS``) and their sum.
    """

    def __init__(self, tokenizer: Any, vocab_size: int, eos_ids: set[int],
                 settings: GrammarSettings | None = None) -> None:
        self.tokenizer, self.vocab_size, self.eos_ids = tokenizer, vocab_size, sorted(eos_ids)
        self.settings = settings or GrammarSettings()
        self._compiler: Any = None
        self._cache = GrammarCache(self.settings.cache_bytes)
        self._inflight: dict[str, _Compile] = {}
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = 0
        self._lock = threading.Lock()
        self._build_lock = threading.Lock()
        self._counts = dict(hits=0, misses=0, compiles=0, compile_errors=0, timeouts=0, rejected=0)
        self._seconds = [0] * (len(COMPILE_SECONDS_BUCKETS) + 1)
        self._seconds_sum = 0.0

    # ---- requests -------------------------------------------------------------------------------

    def submit(self, response_format: dict | None, again: bool = False) -> GrammarTicket | None:
        """Start compiling ``response_format`` (or find it compiled, or compiling for another
        request); returns at once. None when unconstrained.

        Args:
            response_format: OpenAI's response_format (see ``schema_of``).
            again: the request's schema was submitted before (the engine, after the server's
                admission): a cache hit is not counted a second time.

        Returns:
            A ticket whose future is done already on a cache hit.

        Raises:
            SchemaTooLarge, SchemaError: the schema fails ``schema_check`` (checked here, in the
                caller's thread, before anything is queued; a cached schema is not checked again).
        """
        if response_format_kind(response_format) == "text":
            return None
        key = self._cached_key(response_format)
        deadline = time.monotonic() + self.settings.compile_timeout_s
        with self._lock:
            if key is not None:
                hit = self._cache.get(key)
                if hit is not None:
                    self._counts["hits"] += not again
                    return GrammarTicket(key, _done(hit), deadline, self)
        if key is None:
            try:
                key = schema_of(response_format, self.settings.limits)
            except SchemaError:
                with self._lock:
                    self._counts["rejected"] += 1
                raise
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._counts["hits"] += not again
                return GrammarTicket(key, _done(hit), deadline, self)
            self._counts["misses"] += 1
            job = self._inflight.get(key)
            if job is None:
                job = self._inflight[key] = _Compile(key)
                self._jobs.put(job)
                if self._threads < self.settings.compile_threads:  # threads end when the queue is empty
                    self._threads += 1
                    self._start_thread()
            job.waiters += 1
            return GrammarTicket(key, job.future, deadline, self)

    def compile(self, response_format: dict | None) -> Any:
        """The compiled grammar of ``response_format`` (an ``xgrammar.CompiledGrammar``), None
        when unconstrained; blocks the caller up to the time budget.

        Raises:
            SchemaTooLarge, SchemaError: the schema fails its checks, or xgrammar cannot compile
                it (the message names xgrammar's reason).
            GrammarTimeout: not compiled within ``settings.compile_timeout_s``.
        """
        ticket = self.submit(response_format)
        if ticket is None:
            return None
        try:
            return ticket.future.result(timeout=max(0.0, ticket.deadline - time.monotonic()))
        except concurrent.futures.TimeoutError:
            raise self.give_up(ticket) from None

    async def wait(self, ticket: GrammarTicket) -> Any:
        """Await ``ticket``'s compiled grammar without blocking the event loop (a cancelled
        waiter gives up its claim).

        Raises:
            SchemaError: xgrammar cannot compile the schema.
            GrammarTimeout: not compiled by ``ticket.deadline``.
        """
        if ticket.future.done():
            return ticket.future.result()
        waiter = asyncio.wrap_future(ticket.future)  # never cancelled: that would cancel the shared compile
        waiter.add_done_callback(lambda f: f.cancelled() or f.exception())  # its error is read, or no one's
        try:
            done, _ = await asyncio.wait({waiter}, timeout=max(0.0, ticket.deadline - time.monotonic()))
        except asyncio.CancelledError:
            self.give_up(ticket, timed_out=False)
            raise
        if not done:
            raise self.give_up(ticket)
        return waiter.result()

    def give_up(self, ticket: GrammarTicket, timed_out: bool = True) -> GrammarTimeout:
        """Withdraw ``ticket``'s claim (its request timed out, or left: ``timed_out`` False); a
        compile no one waits for any more is dropped if it has not started. Returns the
        GrammarTimeout to raise."""
        dropped = False
        with self._lock:
            job = self._inflight.get(ticket.key)
            if job is not None and job.future is ticket.future:
                job.waiters -= 1
                if job.waiters <= 0 and job.future.cancel():
                    del self._inflight[ticket.key]
                    dropped = True
            self._counts["timeouts"] += timed_out
        budget = self.settings.compile_timeout_s
        simpler = "simplify the schema (fewer optional properties, shorter enums)"
        then = (f"it was still queued behind other compiles; retry later, or {simpler}" if dropped else
                f"{simpler}, or retry later: the compile goes on and a retry uses its result")
        return GrammarTimeout(f"the response_format's JSON schema did not compile within the {budget:g} s budget; "
                              f"{then}")

    def state(self, response_format: dict | None) -> GrammarState | None:
        """A fresh per-sequence state for ``response_format`` (None when unconstrained); blocks
        up to the time budget when the schema is not compiled yet (see ``compile``)."""
        compiled = self.compile(response_format)
        return None if compiled is None else GrammarState(compiled, self.vocab_size)

    def warm_up(self) -> None:
        """Build xgrammar's view of the vocabulary in the background now, so the first
        constrained request does not pay for it (returns at once)."""
        def build() -> None:
            try:
                self._xgr_compiler()
            except Exception as exc:  # noqa: BLE001 - the first compile reports it to its request
                log.warning("structured output is not available: %s", exc)
        threading.Thread(target=build, name="parainfer-grammar-warm-up", daemon=False).start()  # as _work

    @property
    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters (see the class docstring) for /metrics."""
        with self._lock:
            return {**self._counts, "evictions": self._cache.evictions, "cache_bytes": self._cache.bytes,
                    "cache_entries": len(self._cache), "compiling": len(self._inflight),
                    "compile_seconds_buckets": list(self._seconds), "compile_seconds_sum": self._seconds_sum}

    # ---- the compile threads ---------------------------------------------------------------------

    def _cached_key(self, response_format: dict) -> str | None:
        """The cache key without checking the schema again when it is a dict already known to
        the cache (None: check it first). A json_object needs no check."""
        if response_format["type"] == "json_object":
            return JSON_OBJECT_SCHEMA
        schema = response_format["json_schema"]["schema"]
        if not isinstance(schema, dict):
            return None
        try:
            key = schema_text(schema)
        except (RecursionError, ValueError, TypeError):
            return None
        with self._lock:
            return key if self._cache.get(key) is not None else None

    def _work(self) -> None:
        """A compile thread: runs queued compiles until none is left, then ends; also after a
        compile that lowered its priority (a fresh thread, at the caller's priority, takes the
        rest) and once the interpreter is exiting. Not a daemon: the interpreter's exit waits for
        a compile under way, since a daemon thread stopped inside xgrammar's C++ aborts the
        process ("terminate called without an active exception")."""
        while True:
            with self._lock:  # submit queues and counts threads under this lock: no job is left behind
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    self._threads -= 1
                    return
            lowered = job.future.set_running_or_notify_cancel() and self._run(job)
            exiting = not threading.main_thread().is_alive()
            if lowered or exiting:
                with self._lock:
                    if self._jobs.empty() or exiting:
                        self._threads -= 1
                    else:
                        self._start_thread()
                return

    def _start_thread(self) -> None:
        """Start a compile thread (the caller holds ``_lock`` and has counted it in ``_threads``)."""
        threading.Thread(target=self._work, name="parainfer-grammar", daemon=False).start()

    def _run(self, job: _Compile) -> bool:
        """Compile ``job`` and hand its result to its waiters; True if the thread's priority was
        lowered meanwhile (after ``NICE_AFTER_S`` of CPU time)."""
        lowered, done = threading.Event(), threading.Event()
        if self.settings.compile_niceness:
            threading.Thread(target=self._watch_cpu, args=(_cpu_clock(), threading.get_native_id(), done, lowered),
                             name="parainfer-grammar-watch", daemon=True).start()
        t0 = time.perf_counter()
        try:
            compiled = self._compile(job.key)
        except BaseException as exc:  # noqa: BLE001 - handed to every waiter
            error: BaseException | None = exc
            compiled = None
        else:
            error = None
        finally:
            done.set()
        seconds = time.perf_counter() - t0
        with self._lock:
            self._counts["compiles"] += 1
            self._counts["compile_errors"] += error is not None
            self._seconds[_bucket(seconds)] += 1
            self._seconds_sum += seconds
            if compiled is not None:
                self._cache.put(job.key, compiled, int(compiled.memory_size_bytes))
            self._inflight.pop(job.key, None)
        if seconds > self.settings.compile_timeout_s:
            log.warning("a JSON schema of %d bytes took %.1f s to compile (budget %g s)", len(job.key), seconds,
                        self.settings.compile_timeout_s)
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(compiled)
        return lowered.is_set()

    def _watch_cpu(self, clock: Any, tid: int, done: threading.Event, lowered: threading.Event) -> None:
        """Until ``done``: once the compile thread ``tid`` has used ``NICE_AFTER_S`` of CPU time
        on this compile (``clock``: its CPU clock id; None: wall time where there is none), lower
        its CPU priority by ``compile_niceness``. CPU time, not wall time: on a busy host a
        millisecond compile may wait seconds for a core, and must not be slowed further."""
        start = time.clock_gettime(clock) if clock is not None else time.monotonic()
        while not done.wait(0.05):
            used = (time.clock_gettime(clock) if clock is not None else time.monotonic()) - start
            if used >= NICE_AFTER_S:
                self._lower_priority(tid, lowered)
                return

    def _lower_priority(self, tid: int, lowered: threading.Event) -> None:
        """Lower compile thread ``tid``'s CPU priority by ``compile_niceness`` (Linux schedules
        threads alone; elsewhere, or when not allowed, it keeps its priority)."""
        try:
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid)
                                                     + self.settings.compile_niceness))
        except (AttributeError, OSError) as exc:
            log.debug("grammar compile thread %d keeps its priority: %s", tid, exc)
            return
        lowered.set()

    def _compile(self, schema: str) -> Any:
        compiler = self._xgr_compiler()
        try:
            compiled = compiler.compile_json_schema(schema, **_compile_options(schema))
        except Exception as exc:  # noqa: BLE001 - xgrammar raises RuntimeError for every bad schema
            raise SchemaError(f"the JSON schema cannot be compiled: {_clean(exc)}") from None
        if not self._allows_a_first_token(compiled):
            raise SchemaError("the JSON schema admits no JSON value (its grammar allows no first token)")
        return compiled

    def _allows_a_first_token(self, compiled: Any) -> bool:
        """Whether a fresh matcher allows any token: a net under ``schema_check``'s cycle check."""
        xgr = _xgrammar()
        bitmask = xgr.allocate_token_bitmask(1, self.vocab_size)
        xgr.GrammarMatcher(compiled).fill_next_token_bitmask(bitmask, 0)
        return bool(bitmask.any())

    def _xgr_compiler(self) -> Any:
        """xgrammar's compiler (its own cache off: ours is bounded), built once."""
        with self._build_lock:
            if self._compiler is None:
                xgr = _xgrammar()
                self._compiler = xgr.GrammarCompiler(self._tokenizer_info(xgr), max_threads=1, cache_enabled=False)
            return self._compiler

    def _tokenizer_info(self, xgr: Any) -> Any:
        """xgrammar's view of the vocabulary, shared by the engines of one tokenizer (a rebuilt
        engine, the engines of a test session) since it takes seconds to build."""
        key = (id(self.tokenizer), self.vocab_size, tuple(self.eos_ids))
        with _INFO_LOCK:
            if key not in _TOKENIZER_INFO:
                info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.vocab_size,
                                                          stop_token_ids=self.eos_ids)
                _TOKENIZER_INFO[key] = (self.tokenizer, info)  # the tokenizer is held: its id stays unique
            return _TOKENIZER_INFO[key][1]


def _cpu_clock() -> Any:
    """The calling thread's CPU-time clock id (Linux and most Unixes), None elsewhere."""
    try:
        return time.pthread_getcpuclockid(threading.get_ident())
    except (AttributeError, OSError):
        return None


def _done(value: Any) -> concurrent.futures.Future:
    future: concurrent.futures.Future = concurrent.futures.Future()
    future.set_result(value)
    return future


def _bucket(seconds: float) -> int:
    """Index of the first COMPILE_SECONDS_BUCKETS bound >= seconds (the last slot: above all)."""
    for i, bound in enumerate(COMPILE_SECONDS_BUCKETS):
        if seconds <= bound:
            return i
    return len(COMPILE_SECONDS_BUCKETS)


class GrammarState:
    """One sequence's position in its grammar (an ``xgrammar.GrammarMatcher``)."""

    def __init__(self, compiled: Any, vocab_size: int) -> None:
        self.matcher = _xgrammar().GrammarMatcher(compiled)
        self.vocab_size = vocab_size

    def accept(self, token: int) -> None:
        """Advance past ``token``. Raises RuntimeError if the grammar refuses it (the mask let
        it through: a bug; the engine fails that one sequence)."""
        if not self.matcher.accept_token(int(token)):
            raise RuntimeError(f"token {token} is not allowed by the sequence's grammar")

    @property
    def is_terminated(self) -> bool:
        """True once the grammar has accepted an end-of-sequence token."""
        return bool(self.matcher.is_terminated())


def mask_logits(logits: torch.Tensor, states: list[GrammarState | None]) -> dict[int, Exception]:
    """Set the logits each row's grammar forbids next to -inf, in place, for the whole batch.

    Args:
        logits: [B, vocab] float32 logits of one step.
        states: B entries, a :class:`GrammarState` for a constrained row, None for a free one.

    Returns:
        {row: exception} for rows whose mask could not be computed (the engine fails those
        sequences alone); their logits are left as they were.

    Each constrained row's bitmask is filled by its own matcher (xgrammar's per-token work);
    the masks are then applied in one call (one call for 32 rows costs about what one call for
    a single row does).
    """
    rows = [i for i, state in enumerate(states) if state is not None]
    if not rows:
        return {}
    xgr = _xgrammar()
    bitmask = xgr.allocate_token_bitmask(logits.shape[0], logits.shape[1])
    failed: dict[int, Exception] = {}
    for i in rows:
        try:
            states[i].matcher.fill_next_token_bitmask(bitmask, i)  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - fails only this sequence
            failed[i] = exc
    ok = [i for i in rows if i not in failed]
    if ok:
        xgr.apply_token_bitmask_inplace(logits, bitmask, vocab_size=logits.shape[1], indices=ok)
    return failed
