"""The contract between the server and its generation engine replicas: what a replica reports.

A :class:`ReplicaLauncher` (``local.LocalReplicas``: processes; ``ray.RayReplicas``: Ray actors)
starts replica ``w`` with ``start(w, on_event)`` and returns its :class:`ReplicaHandle`. A reader
thread per handle then calls ``on_event`` with one :data:`ReplicaEvent` at a time: first
:class:`ReplicaReady` or :class:`ReplicaFailed`, then :class:`ReplicaOutput` batches of the engine's
:data:`EngineMessage` s, and :class:`ReplicaExited` when the process or actor is gone. Nothing
is reported after ``close()`` but output batches already on their way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Union


# ---- what the engine sends, in batches (``host.EngineHost.drain``) ---------------------------------

@dataclass(frozen=True)
class SequenceOutput:
    """One request's progress in one engine step (a ``generation.RequestOutput``)."""

    output: Any


@dataclass(frozen=True)
class SequenceFailed:
    """That sequence failed alone in the engine (the others go on); ``reason``: "Type: message".

    ``status`` and ``code``: the HTTP status and OpenAI error code when the request itself was at
    fault (a ``UsageError`` carrying them: its schema did not compile in time, 408); None for an
    engine fault. ``message``: then the error's own message, for the client."""

    request_id: str
    reason: str
    status: int | None = None
    code: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class EngineBroken:
    """An engine step raised (its state may be broken): the server fails the replica's requests and
    replaces it; ``reason``: "Type: message"."""

    reason: str


@dataclass(frozen=True)
class EngineStats:
    """The engine's counters (``LLMEngine.stats``: prefill and prefix-cache tokens, steps), sent
    whenever they changed, so the server's /metrics can sum the replicas."""

    stats: dict[str, Any]


EngineMessage = Union[SequenceOutput, SequenceFailed, EngineBroken, EngineStats]


# ---- what a handle reports (``on_event``) -----------------------------------------------------------

@dataclass(frozen=True)
class ReplicaReady:
    """The engine loaded. ``info``: ``host.engine_info`` plus ``load_s`` (and ``node``, the actor's
    IP address, on Ray)."""

    info: dict[str, Any]


@dataclass(frozen=True)
class ReplicaFailed:
    """The model failed to load (restarting will not help); ``reason`` holds the cause and a short
    traceback."""

    reason: str


@dataclass(frozen=True)
class ReplicaOutput:
    """The engine's messages since the last batch, in order."""

    messages: list[EngineMessage]


@dataclass(frozen=True)
class ReplicaExited:
    """The process or actor is gone (killed, crashed, its node lost); ``reason`` says how."""

    reason: str


ReplicaEvent = Union[ReplicaReady, ReplicaFailed, ReplicaOutput, ReplicaExited]
OnEvent = Callable[[ReplicaEvent], None]


class ReplicaHandle(Protocol):
    """One started replica: a process or actor holding one engine."""

    def add(self, request_id: str, prompt: list[int], params: Any) -> None:
        """Send one sequence (prompt token ids, ``generation.SamplingParams``) to the engine.

        Raises:
            OSError: the replica is gone (its ``ReplicaExited`` follows).
        """

    def abort(self, request_id: str) -> None:
        """Stop that sequence in the engine; nothing when the replica is gone already."""

    def close(self) -> None:
        """Stop the replica (kill its process or actor)."""


class ReplicaLauncher(Protocol):
    """Starts replicas somewhere: ``name`` is the executor ("local" | "ray")."""

    name: str

    def connect(self) -> None:
        """Prepare to start replicas (Ray: connect to the cluster); blocking.

        Raises:
            UsageError: the cluster has too little room for the replicas.
        """

    def start(self, w: int, on_event: OnEvent) -> ReplicaHandle:
        """Start replica ``w`` (0..N-1; again after a death) and report its events to ``on_event``,
        called in the handle's reader thread."""

    def close(self) -> None:
        """Release what ``connect`` took (each handle's ``close`` stops its replica)."""
