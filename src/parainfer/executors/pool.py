"""A started executor that outlives one job: the workers of a ``parainfer.Pool``.

A job normally starts its executor and shuts it down at the end. Several jobs can instead run
one after another on the same started executor (the model replicas stay loaded): the driver
then takes a `Workers` and keeps what it learns about the workers in it (which are ready,
the loaded model's description), so the next job starts dispatching at
once. Jobs on one `Workers` must not run at the same time. ``start_workers`` starts them (the
Python API's ``Pool``, sharded mode, benchmarks) within this machine's memory (``plan_start``),
``wait_ready`` waits for their models.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from parainfer.errors import JobError
from parainfer.executors.base import WARM_ENV, Executor, WorkerFailed, WorkerReady
from parainfer.platform.resources import (available_bytes, estimate_replica_bytes, replicas_that_fit, rss_bytes,
                                          start_all_at_once)


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
                  config: Any = None, warm: Sequence[str] = ()) -> Workers:
    """Start N workers, each loading a replica of ``predictor`` (non-blocking: WorkerReady events
    follow). The caller owns them: ``Job.run(workers)`` any number of times, then ``shutdown()``.

    ``config`` picks the executor (``--executor`` and its Ray options; default local processes)
    and the memory budget: fewer than N start when N replicas cannot fit in this machine's memory
    (``plan_start``; the returned ``Workers.num_workers`` says how many). Events read
    while sizing the first replica are kept in ``Workers.pending`` for the first job. ``warm``:
    modules a local worker imports in a background thread once its model is loaded (the
    driver's task runners), so its first task does not wait for them.

    Raises JobError when the first worker cannot load the model (fatally).
    """
    name = config.executor if config else "local"
    options = dict(address=config.address, cpus_per_worker=config.cpus_per_worker,
                   gpus_per_worker=config.gpus_per_worker, min_workers=getattr(config, "min_workers", None)) if config else {}
    from parainfer.executors import make_executor

    env = {WARM_ENV: ",".join(warm)} if warm else None
    executor = make_executor(name, predictor, num_workers, threads_per_worker, env, **options)
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


def plan_start(executor: Any, predictor: Any, workers: int, budget: int | None) -> tuple[int, list[Any]]:
    """Start the workers of ``executor``, fewer than ``workers`` when they do not fit in memory
    (the arithmetic: ``platform.resources``).

    Args:
        executor: an unstarted executor for ``workers`` workers. Only one whose replicas share
            this machine's memory (it has ``start(first, count)`` and ``shrink``: the local
            executor) is checked; a Ray executor's replicas live on the cluster's nodes and
            are placed by Ray's own resource accounting, so it just starts.
        predictor: the unloaded predictor (for the weights' size).
        workers: N asked for.
        budget: bytes the replicas may use; None = SAFETY x MemAvailable.

    Returns:
        (workers started, events already read from worker 0 while waiting for it: hand them
        to the driver's event handler).

    Raises:
        JobError: worker 0 failed to load its model (fatally).
    """
    avail = available_bytes()
    if not hasattr(executor, "shrink") or start_all_at_once(predictor, workers, budget, avail):
        executor.start()
        return workers, []
    executor.start(count=1)
    events = _wait_first_ready(executor)
    replica = rss_bytes(executor.pid(0)) or estimate_replica_bytes(predictor)
    fit = replicas_that_fit(workers, replica, budget, avail)
    if fit < workers:
        executor.shrink(fit)
    executor.start(first=1)
    return fit, events


def _wait_first_ready(executor: Any, timeout_s: float = 3600.0) -> list[Any]:
    """Poll until worker 0 is ready (a death while loading restarts it, as a driver would);
    returns [its WorkerReady]."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for ev in executor.poll(timeout=0.2):
            if isinstance(ev, WorkerReady):
                return [ev]
            if isinstance(ev, WorkerFailed) and ev.fatal:
                raise JobError(f"worker {ev.worker_id}: {ev.reason.strip()}")
            if isinstance(ev, WorkerFailed):
                executor.restart(ev.worker_id)
    raise JobError(f"worker 0 did not load its model within {timeout_s:.0f} s")
