"""One generation engine replica inside a worker (``serve --task generate --workers N``).

A worker (a local process, or the Ray actor of ``ray_actor.py``) holds one :class:`EngineHost`:
an engine (``generation.engine_contract.GenerationEngine``: the own LLMEngine, llama.cpp or vLLM,
built by ``generation.engines.build_engine``) stepped by an :class:`~parainfer.generation.EngineLoop`
thread. The server sends it requests (``add``) and aborts; the host hands back, in batches, the
messages of every step (``handles``). ``replica_process_main`` is the local process's entry
point (commands on one pipe, events on another). The protocol: docs/serving.md, "Generation",
"How the router and the replicas talk".
"""

from __future__ import annotations

import os
import queue
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

from parainfer.errors import UsageError
from parainfer.executors.engine_replicas.handles import (
    EngineBroken,
    EngineMessage,
    EngineStats,
    ReplicaFailed,
    ReplicaReady,
    SequenceFailed,
    SequenceOutput,
)
from parainfer.executors.worker_env import driver_gone, enter_worker_process


@dataclass(frozen=True)
class EngineSpec:
    """How a worker builds its engine (sent to each worker, built there).

    Attributes:
        model: a local HF directory or a .gguf file of an architecture in ``llama.ARCHS``; None
            or "default": SmolLM2-135M-Instruct (``generation.resolve_model``).
        dtype: "auto" (float32 here) | "float32" | "bfloat16".
        max_num_seqs: most sequences in the engine's running batch.
        threads: torch intra-op threads of the engine (None: torch's default).
        prefix_cache: automatic prefix caching in the engine (``--no-prefix-cache``: False).
        grammar: structured output's ``generation.grammar.GrammarSettings`` (None: its defaults).
        deterministic: ``EngineConfig.deterministic`` (greedy tokens independent of the batch).
        engine: ``--engine`` (``generation.engines.ENGINES``): which engine the worker builds.
    """

    model: str | None
    dtype: str
    max_num_seqs: int
    threads: int | None
    prefix_cache: bool = True
    grammar: Any = None
    deterministic: bool = False
    engine: str = "auto"

    def build(self) -> Any:
        """Load the model and build the engine (``generation.engines.build_engine``; raises what
        loading raises)."""
        from parainfer.generation.engines import build_engine

        dtype = "float32" if self.dtype == "auto" else self.dtype
        extra = {} if self.grammar is None else {"grammar": self.grammar}
        return build_engine(self.engine, self.model, dtype=dtype, max_num_seqs=self.max_num_seqs,
                            threads=self.threads, enable_prefix_caching=self.prefix_cache,
                            deterministic=self.deterministic, **extra)

    def load_tokenizer(self) -> Any:
        """The model's tokenizer alone (the server tokenises; the workers hold the weights)."""
        from parainfer.generation.engines import load_tokenizer

        return load_tokenizer(self.engine, self.model)


def engine_info(engine: Any) -> dict[str, Any]:
    """What the server needs to admit requests for this engine (an ``engine_contract.GenerationEngine``)
    without holding it (its grammar settings too: the server checks and compiles each schema first,
    with the same limits)."""
    cfg = engine.config
    return {"engine": engine.name, "max_model_len": engine.max_model_len, "num_blocks": cfg.num_blocks, "block_size": cfg.block_size,
            "max_num_seqs": cfg.max_num_seqs, "dtype": cfg.dtype, "pid": os.getpid(),
            "vocab_size": engine.grammars.vocab_size, "eos_token_ids": list(engine.grammars.eos_ids),
            "grammar": engine.grammars.settings, "batch_invariance": dict(engine.batch_invariance)}


class EngineHost:
    """An engine and its loop thread, with an outbox of messages (see the module docstring).

    Args:
        engine: a loaded ``engine_contract.GenerationEngine`` (the host starts its loop).
    """

    def __init__(self, engine: Any) -> None:
        from parainfer.generation import EngineLoop

        self._out: queue.SimpleQueue = queue.SimpleQueue()
        self._sent_stats: dict[str, Any] = {}
        self.loop = EngineLoop(engine, on_error=self._broken).start()
        engine.grammars.warm_up()

    def info(self) -> dict[str, Any]:
        """``engine_info`` of the hosted engine."""
        return engine_info(self.loop.engine)

    def add(self, request_id: str, prompt: list[int], params: Any) -> None:
        """Queue one sequence; a prompt the engine refuses ends at once with a ``SequenceFailed``."""
        def deliver(out: Any) -> None:
            if isinstance(out, BaseException):
                status = getattr(out, "status", None) if isinstance(out, UsageError) else None
                self._out.put(SequenceFailed(request_id, f"{type(out).__name__}: {out}", status,
                                             getattr(out, "code", None) if status else None,
                                             str(out) if status else None))
            else:
                self._out.put(SequenceOutput(out))
        try:
            self.loop.add(prompt, params, request_id, deliver)
        except Exception as exc:  # noqa: BLE001 - admission checked it already; report, never crash
            deliver(exc)

    def abort(self, request_id: str) -> None:
        """Stop that sequence (nothing when it has ended)."""
        self.loop.abort(request_id)

    def drain(self, timeout: float) -> list[EngineMessage]:
        """Messages since the last call; waits up to ``timeout`` seconds for the first one. Ends
        with an ``EngineStats`` message when the engine's counters changed since the last."""
        try:
            messages = [self._out.get(timeout=timeout)]
        except queue.Empty:
            messages = []
        while messages:
            try:
                messages.append(self._out.get_nowait())
            except queue.Empty:
                break
        stats = dict(self.loop.engine.stats)  # a copy: the loop thread updates it after each step
        if stats != self._sent_stats:
            self._sent_stats = stats
            messages.append(EngineStats(stats))
        return messages

    def stop(self) -> None:
        """Stop the engine loop thread."""
        self.loop.stop()

    def _broken(self, exc: BaseException) -> None:
        self._out.put(EngineBroken(f"{type(exc).__name__}: {exc}"))


def load_failure(exc: BaseException) -> str:
    """The reason a replica reports when its engine failed to build: cause plus a short traceback."""
    return f"model failed to load: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"


def replica_process_main(worker_id: int, spec: EngineSpec, commands: Any, events: Any, env: dict[str, str]) -> None:
    """Local worker entry point. ``commands`` yields ("add", id, prompt, params), ("abort", id)
    or ("stop",); ``events`` gets ``ReplicaReady`` or ``ReplicaFailed``, then lists of
    ``EngineMessage`` (``handles``)."""
    enter_worker_process(worker_id, spec.threads, env)
    t0 = time.perf_counter()
    try:
        host = EngineHost(spec.build())
    except BaseException as exc:  # noqa: BLE001 - reported to the server: restarting will not help
        events.send(ReplicaFailed(load_failure(exc)))
        return
    events.send(ReplicaReady({**host.info(), "load_s": time.perf_counter() - t0}))
    done = threading.Event()
    threading.Thread(target=_send_forever, args=(host, events, done), name="parainfer-replica-out",
                     daemon=True).start()
    try:
        while True:
            cmd = commands.recv()
            if cmd[0] == "add":
                host.add(cmd[1], cmd[2], cmd[3])
            elif cmd[0] == "abort":
                host.abort(cmd[1])
            else:
                break
    except (EOFError, OSError):  # the server is gone
        pass
    done.set()
    host.stop()


def _send_forever(host: EngineHost, events: Any, done: threading.Event) -> None:
    while not done.is_set():
        messages = host.drain(0.5)
        try:
            if messages:
                events.send(messages)
        except (BrokenPipeError, EOFError, OSError):
            os._exit(0)  # the server is gone
        if driver_gone():
            os._exit(0)
