"""A started executor that outlives one job: the workers of a ``parainfer.Pool``.

A job normally starts its executor and shuts it down at the end. Several jobs can instead run
one after another on the same started executor (the model replicas stay loaded): the engine
then takes a `Workers` and keeps what it learns about the workers in it (which are ready,
the loaded model's description), so the next job starts dispatching at
once. Jobs on one `Workers` must not run at the same time. ``start_workers`` starts them (the
Python API's ``Pool``, sharded mode, benchmarks), ``wait_ready`` waits for their models.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from parainfer.errors import JobError
from parainfer.executors.base import Executor, WorkerFailed, WorkerReady


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


def start_workers(predictor: Any, num_workers: int, threads_per_worker: int | None = None,
                  config: Any = None) -> Workers:
    """Start N workers, each loading a replica of ``predictor`` (non-blocking: WorkerReady events
    follow). The caller owns them: ``Job.run(workers)`` any number of times, then ``shutdown()``.

    ``config`` picks the executor (``--executor`` and its Ray options; default local processes)
    and the memory budget: fewer than N start when N replicas cannot fit in this machine's memory
    (``resources.plan_start``; the returned ``Workers.num_workers`` says how many). Events read
    while sizing the first replica are kept in ``Workers.pending`` for the first job.

    Raises JobError when the first worker cannot load the model (fatally).
    """
    name = config.executor if config else "local"
    options = dict(address=config.address, cpus_per_worker=config.cpus_per_worker,
                   gpus_per_worker=config.gpus_per_worker) if config else {}
    from parainfer.executors import make_executor
    from parainfer.platform.resources import plan_start

    executor = make_executor(name, predictor, num_workers, threads_per_worker, **options)
    try:
        _, events = plan_start(executor, predictor, num_workers, config.memory_budget_bytes if config else None)
    except BaseException:
        executor.shutdown()
        raise
    return Workers(executor, pending=events)


def wait_ready(workers: Workers, timeout_s: float | None = None) -> None:
    """Block until every worker of ``workers`` has loaded its model (WorkerReady), so a job that
    follows times compute only. A worker that dies while loading is restarted, as in a job.

    Raises JobError when a worker cannot load the model, TimeoutError after ``timeout_s``."""
    executor, deadline = workers.executor, time.perf_counter() + (timeout_s or float("inf"))
    for event in workers.take_pending():  # worker 0's WorkerReady, read by the memory plan
        if isinstance(event, WorkerReady):
            workers.ready.add(event.worker_id)
            workers.model_info = event.info
    while len(workers.ready) < workers.num_workers:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{len(workers.ready)} of {workers.num_workers} workers ready after {timeout_s} s")
        for event in executor.poll(timeout=0.1):
            if isinstance(event, WorkerReady):
                workers.ready.add(event.worker_id)
                workers.model_info = event.info
            elif isinstance(event, WorkerFailed):
                workers.ready.discard(event.worker_id)
                if event.fatal:
                    raise JobError(f"worker {event.worker_id}: {event.reason.strip()}")
                executor.restart(event.worker_id)
