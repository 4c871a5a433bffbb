"""Recovery from faults during a job, one policy for record tasks and shards.

* ``RecoveryPolicy.plan(held, running)``: a worker died; of the ``Splittable`` units it held,
  the one it ran is the suspect: bisected when it holds several records, else retried up to
  ``max_retries`` times, then failed alone; the others are requeued untouched.
  ``TaskRecovery`` applies it to record mode's live tasks, ``shard_mode`` to shards;
  ``on_worker_failed`` is both drivers' handler of a ``WorkerFailed`` event.
* ``on_write_failed``: a worker could not write its output (a full disk): no unit is to blame,
  nothing is restarted or split; the job stops as when the driver's own write fails.
* ``Watchdog.check(executor, now)``: kills a worker whose task ran past ``--task-timeout``.
* ``GracefulStop``: the first SIGINT/SIGTERM stops dispatching and lets in-flight work finish
  for ``grace_s``; a second exits at once with 130. ``Interrupted``: the job stopped early.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, NoReturn, Protocol

from parainfer.errors import JobError, ParainferError
from parainfer.executors.base import Task, WorkerFailed, WriteFailed
from parainfer.executors.pool import Workers
from parainfer.batch.tasks import batch_sizes_split


class Splittable(Protocol):
    """A unit of work recovery can give out again, bisect or fail: a record-mode task
    (``TaskPiece``) or a shard (``shard_mode.ShardPiece``).

    Attributes: index (the unit's number in its driver's live table), attempt (deaths of
    workers running it alone so far). ``split()`` returns its halves (fresh units, attempt 0), or
    None when it holds a single record; ``len()``: its records (a shard counts as one).
    """

    index: int
    attempt: int

    def split(self) -> list[Splittable] | None: ...

    def __len__(self) -> int: ...


@dataclass
class Triage:
    """What ``RecoveryPolicy.plan`` decided for the units a dead worker held.

    Attributes:
        requeue: units to give out again, in held order: the untouched ones as they are, a
            retried suspect (its ``attempt`` counted), a bisected suspect's halves.
        untouched: the units the worker held but had not started (a subset of ``requeue``).
        split: (suspect, its halves) for each bisected suspect.
        retried: single-record suspects given out again.
        failed: single-record suspects out of retries (``attempt + 1`` deaths): fail them alone.
    """

    requeue: list[Any] = field(default_factory=list)
    untouched: list[Any] = field(default_factory=list)
    split: list[tuple[Any, list[Any]]] = field(default_factory=list)
    retried: list[Any] = field(default_factory=list)
    failed: list[Any] = field(default_factory=list)


class RecoveryPolicy:
    """One rule for tasks and shards whose worker died.

    The unit the worker was running is the suspect (when the executor does not know it, the
    oldest unit it held); the others are requeued untouched, no attempt counted. A suspect of
    several records is bisected (a poison record is isolated in about log2(B) deaths); a
    single record is given out again up to ``max_retries`` times, then failed alone.

    Args:
        max_retries: times a single-record suspect is given out again before it fails (>= 0).
    """

    def __init__(self, max_retries: int):
        self.max_retries = max_retries

    def plan(self, held: list[Splittable], running: int | None) -> Triage:
        """Decide for ``held`` (the live units of a dead worker, oldest first); ``running``: the
        index of the unit it had started (None: unknown; one no unit has: no suspect). Counts
        a retried suspect's ``attempt``; returns the ``Triage``."""
        suspect = running if running is not None else (held[0].index if held else None)
        out = Triage()
        for unit in held:
            if unit.index != suspect:
                out.untouched.append(unit)
                out.requeue.append(unit)
                continue
            halves = unit.split()
            if halves is not None:
                out.split.append((unit, halves))
                out.requeue.extend(halves)
            elif unit.attempt < self.max_retries:
                unit.attempt += 1
                out.retried.append(unit)
                out.requeue.append(unit)
            else:
                out.failed.append(unit)
        return out


@dataclass
class RecoveryPlan:
    """What record mode does after a worker death (``TaskRecovery.plan``).

    Attributes:
        requeue: tasks to give out again (the dead worker's queued tasks, the suspect's retry
            or its two halves), already registered in the live-task table.
        failed: (task, reason) whose records all go to the errors file; already removed from
            the live-task table.
        retries: tasks given out again because they were the suspect (report counter).
        bisected: suspects split in two (report counter).
        rebatched: suspects of one batch that were bisected: their records run in other batches
            than the plan's (``report.Determinism``); a task of several batches splits into its
            own batches, which changes none.
    """

    requeue: list[Task] = field(default_factory=list)
    failed: list[tuple[Task, str]] = field(default_factory=list)
    retries: int = 0
    bisected: int = 0
    rebatched: list[Task] = field(default_factory=list)


def split_task(task: Task, first_index: int, second_index: int) -> tuple[Task, Task]:
    """Cut a task of B >= 2 records into halves of B//2 and B - B//2 (order kept).

    Token counts are shared in proportion to the records; ``attempt`` starts again at 0 for
    each half (a half is a new task). Any other Task fields are copied.
    """
    if len(task) < 2:
        raise ValueError(f"cannot split task {task.index} of {len(task)} record(s); need >= 2")
    mid = len(task) // 2
    first, second = batch_sizes_split(task.batches, mid)
    return _slice(task, first_index, 0, mid, first), _slice(task, second_index, mid, len(task), second)


def split_batches(task: Task, new_index: Callable[[], int]) -> list[Task]:
    """Cut a task of several batches (``Task.batches``) back into one task per batch, each with
    a fresh index from ``new_index()``; tokens are shared in proportion to the records."""
    out, lo = [], 0
    for size in task.batches or [len(task)]:
        out.append(_slice(task, new_index(), lo, lo + size, None))
        lo += size
    return out


def _slice(task: Task, index: int, lo: int, hi: int, batches: list[int] | None) -> Task:
    """Records ``lo`` .. ``hi - 1`` of ``task`` as a fresh task (attempt 0) numbered ``index``;
    tokens shared in proportion to the records; ``batches``: its batch sizes (one batch: None)."""
    share = (hi - lo) / len(task)
    return dataclasses.replace(
        task, index=index, seqs=task.seqs[lo:hi], texts=task.texts[lo:hi],
        tokens=max(1, round(task.tokens * share)), padded_tokens=max(1, round(task.padded_tokens * share)),
        attempt=0, rows=task.rows.sliced(lo, hi) if task.rows is not None else None,
        batches=batches if batches is not None and len(batches) > 1 else None)


@dataclass
class TaskPiece:
    """A record-mode task as a ``Splittable``: a task of several batches splits back into its
    batches (one more restart at most, not log2 of the group), a batch into halves; each new
    task takes a fresh index from ``new_index()``."""

    task: Task
    new_index: Callable[[], int]

    @property
    def index(self) -> int:
        return self.task.index

    @property
    def attempt(self) -> int:
        return self.task.attempt

    @attempt.setter
    def attempt(self, value: int) -> None:
        self.task.attempt = value

    def __len__(self) -> int:
        return len(self.task)

    def split(self) -> list[TaskPiece] | None:
        task = self.task
        if len(task) < 2:
            return None
        halves = (split_batches(task, self.new_index) if task.batches and len(task.batches) > 1
                  else split_task(task, self.new_index(), self.new_index()))
        return [TaskPiece(half, self.new_index) for half in halves]


class TaskRecovery:
    """Record mode's use of ``RecoveryPolicy``: keeps the live-task table in step.

    Args:
        max_retries: times a single-record suspect is given out again before it fails (>= 0).
        new_index: returns a fresh, unused Task.index (for the halves of a bisected task).
    """

    def __init__(self, max_retries: int, new_index: Callable[[], int]):
        self.policy = RecoveryPolicy(max_retries)
        self.new_index = new_index

    def plan(self, event: WorkerFailed, tasks: dict[int, Task], reason: str | None = None) -> RecoveryPlan:
        """Plan for ``event.tasks``; updates ``tasks`` (record mode's live tasks by index).

        The suspect is ``event.running``; when the executor does not know it (the worker died
        before it reported a start), the oldest task it held. Tasks no longer live (already
        finished through a duplicate) are ignored. ``reason`` overrides ``event.reason``.
        """
        why = reason or event.reason.strip()
        held = [TaskPiece(t, self.new_index) for t in event.tasks if t.index in tasks]
        triage = self.policy.plan(held, event.running)
        out = RecoveryPlan(requeue=[piece.task for piece in triage.requeue])
        for suspect, halves in triage.split:
            if not (suspect.task.batches and len(suspect.task.batches) > 1):
                out.rebatched.append(suspect.task)
            del tasks[suspect.index]
            for half in halves:
                tasks[half.index] = half.task
        for piece in triage.failed:
            del tasks[piece.index]
            out.failed.append((piece.task, f"worker died {piece.attempt + 1} time(s) running this record "
                                           f"alone ({why})"))
        out.retries = len(triage.split) + len(triage.retried)
        out.bisected = len(triage.split)
        return out


def on_worker_failed(event: WorkerFailed, workers: Workers, report: Any,
                     recover: Callable[[WorkerFailed], None]) -> None:
    """Both drivers' handling of a worker death: the worker leaves ``workers.ready``; a fatal
    failure (the model does not load) raises JobError naming the worker and reason; otherwise
    the worker is restarted (``report.per_worker[w].restarts`` counted) and ``recover(event)``
    gives out again or fails the units it held (the driver's use of ``RecoveryPolicy``)."""
    workers.ready.discard(event.worker_id)
    if event.fatal:
        raise JobError(f"worker {event.worker_id}: {event.reason.strip()}")
    workers.executor.restart(event.worker_id)
    report.per_worker[event.worker_id].restarts += 1
    recover(event)


def on_write_failed(event: WriteFailed) -> NoReturn:
    """A worker could not write its task's output (``WriteFailed``: a full disk, a file size
    limit, an I/O error). The disk's fault, not the records': a restart or a split would fail
    the same way and fill the log with deaths, so the job stops at the first one. Raises the
    worker's OSError (naming the file); the driver turns it into ``errors.StorageError`` (exit
    4: the path, the cause, the records committed, "rerun resumes") as it does its own."""
    raise event.error


class Watchdog:
    """Kills workers whose running task takes longer than ``timeout_s`` (None: never).

    The executor must offer ``running(worker_id) -> (task_index, t_start) | None`` and
    ``kill(worker_id)``; times are perf_counter seconds.
    """

    def __init__(self, timeout_s: float | None):
        self.timeout_s = timeout_s
        self._killed: dict[int, str] = {}

    def check(self, executor: Any, now: float | None = None) -> list[int]:
        """Kill overdue workers; returns the ids killed by this call."""
        if not self.timeout_s:
            return []
        now = time.perf_counter() if now is None else now
        killed = []
        for w in range(executor.num_workers):
            running = executor.running(w)
            if running is None or w in self._killed or now - running[1] <= self.timeout_s:
                continue
            self._killed[w] = f"task {running[0]} timed out after {self.timeout_s:g} s; worker {w} killed"
            executor.kill(w)
            killed.append(w)
        return killed

    def reason(self, worker_id: int) -> str | None:
        """The timeout reason for a worker this watchdog killed (once), else None."""
        return self._killed.pop(worker_id, None)


class GracefulStop:
    """SIGINT/SIGTERM handling for the driver, as a context manager.

    First signal: ``requested`` becomes True and ``deadline`` = now + ``grace_s`` (the driver
    stops dispatching and finishes in-flight tasks until then). Second signal: prints a line
    and exits the process at once with code 130 (``on_abort`` runs first, e.g. to kill
    workers). Does nothing outside the main thread (signals can only be caught there).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, grace_s: float = 30.0, on_abort: Callable[[], None] | None = None):
        self.grace_s = grace_s
        self.on_abort = on_abort
        self.requested = False
        self.deadline = float("inf")
        self.signal_name = ""
        self._old: dict[int, Any] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            print("\nsecond interrupt: stopping now; the last checkpoint is kept "
                  "(resume with the same command)", file=sys.stderr, flush=True)
            if self.on_abort is not None:
                try:
                    self.on_abort()
                except Exception:  # noqa: BLE001 - exiting anyway
                    pass
            _release_multiprocessing()
            os._exit(130)
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        self.deadline = time.perf_counter() + self.grace_s
        print(f"\n{self.signal_name}: finishing the tasks in flight (up to {self.grace_s:g} s), then "
              "saving a checkpoint; interrupt again to stop at once", file=sys.stderr, flush=True)


class Interrupted(ParainferError):
    """The job stopped early on SIGINT/SIGTERM after committing its checkpoint (exit 130).

    Attributes: committed (input records done, in total), checkpoint (manifest path or None).
    """

    def __init__(self, committed: int, checkpoint: str | None):
        self.committed, self.checkpoint = committed, checkpoint
        where = f"checkpoint {checkpoint}" if checkpoint else "no checkpoint (output is stdout or input is stdin)"
        resume = "resume with the same command" if checkpoint else "rerun to start over"
        super().__init__(f"interrupted after {committed:,} input records committed ({where}); {resume}")


def _release_multiprocessing() -> None:
    """Before ``os._exit``: run multiprocessing's exit finalizers, the ones a normal exit runs
    (``util._exit_function``). Without them the semaphores of the workers' queues stay
    registered and the resource tracker warns "There appear to be N leaked semaphore objects
    to clean up at shutdown" after the job is gone."""
    try:
        from multiprocessing import util

        util._run_finalizers(0)  # priority >= 0: queue closing, semaphore unlink + unregister
    except Exception:  # noqa: BLE001 - exiting anyway
        pass
