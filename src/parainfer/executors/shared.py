"""A started executor that outlives one job: the workers of a ``parainfer.Pool``.

A job normally starts its executor and shuts it down at the end. Several jobs can instead run
one after another on the same started executor (the model replicas stay loaded): the engine
then takes a `Workers` and keeps what it learns about the workers in it (which are ready,
the loaded model's description), so the next job starts dispatching at
once. Jobs on one `Workers` must not run at the same time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from parainfer.executors.base import Executor


@dataclass
class Workers:
    """A started executor and the driver's knowledge of its workers.

    Attributes:
        executor: the started executor (``start()`` already called).
        ready: ids of the workers that have sent WorkerReady and not died since.
        model_info: the description a worker sent with WorkerReady (the model as loaded).
        broken: set when a job on it ended abnormally (its workers were killed); do not reuse.
        pending: events read while starting (the first replica's WorkerReady when the memory
            plan sized it) that the first job must still handle.
    """

    executor: Executor
    ready: set[int] = field(default_factory=set)
    model_info: dict[str, Any] | None = None
    broken: bool = False
    pending: list[Any] = field(default_factory=list)

    @property
    def num_workers(self) -> int:
        return self.executor.num_workers

    def take_pending(self) -> list[Any]:
        """The pending start-up events, once (later calls return [])."""
        events, self.pending = self.pending, []
        return events

    def shutdown(self) -> None:
        """Stop the workers (idempotent)."""
        self.executor.shutdown()
        self.ready.clear()
