"""The local executor: N worker processes on this machine, one model replica each.

Processes are forked from a warmed ``forkserver`` that has imported the model's heavy modules
once (``executors.start_method``; ``PARAINFER_START_METHOD=spawn`` starts each from a fresh
interpreter instead). Both are safe with PyTorch and threads. Each worker
has its own task queue, so the scheduling policy decides exactly which worker runs which
task, and its own result pipe, so a worker killed mid-write (SIGKILL, OOM) corrupts nothing
the other workers use. A death is noticed through the process sentinel and reported as
``WorkerFailed`` with the tasks the worker held; ``restart`` replaces it.
"""

from __future__ import annotations

import os
import signal
import time
from multiprocessing.connection import wait
from typing import Any

from parainfer.executors.base import Event, Executor, ShardResult, TaskResult, WorkerFailed, WorkerReady, WriteFailed
from parainfer.executors.start_method import PROCESS_NAME_PREFIX, choose_start_method, make_context
from parainfer.executors.worker import worker_main
from parainfer.executors.worker_env import die_with_parent_env
from parainfer.models.base import Predictor
from parainfer.executors.base import Task


def default_threads(num_workers: int) -> int:
    """Threads per worker: usable cores // workers, at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, num_workers))


class _Slot:
    """One worker's process, task queue, result pipe and the tasks it holds."""

    def __init__(self, proc: Any, inbox: Any, results: Any):
        self.proc, self.inbox, self.results = proc, inbox, results
        self.held: dict[int, Task] = {}  # in submission order = the order the worker runs them
        self.submitted: dict[int, float] = {}  # Task.index -> perf_counter when it was queued
        self.free_since = time.perf_counter()  # when it last finished a task (or became ready)
        self.ready = False  # sent WorkerReady (its model loaded)

    def running(self) -> tuple[int, float] | None:
        """(Task.index, estimated start) of the task being run: the oldest held one, started
        when it was queued or when the worker finished its previous task, whichever is later."""
        if not self.held:
            return None
        index = next(iter(self.held))
        return index, max(self.submitted[index], self.free_since)


# A worker that dies this many times in a row before its model has loaded (a segfault or the
# OOM killer during load, not an exception: that is reported as fatal at once) is not restarted.
MAX_DEATHS_WHILE_LOADING = 3


def load_deaths_reason(worker_id: int, deaths: int, exitcode: int | None) -> str:
    """Why a worker that died ``deaths`` times in a row before WorkerReady is given up, by how
    its last process ended (``exitcode``: ``Process.exitcode``, -N for signal N).

    A signal (a segfault, the out-of-memory killer's SIGKILL) hit it while it loaded the model;
    only SIGKILL suggests fewer workers. An exit code >= 0 without a message means it ended
    before its model's ``load`` ran or reported (an error while the process started, printed on
    stderr, or the model code calling ``sys.exit``): that is not the model failing to load."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = "; SIGKILL is often the out-of-memory killer: try fewer --workers" if name == "SIGKILL" else ""
        return (f"model failed to load: worker {worker_id} died {deaths} times in a row while loading it "
                f"(last: exited with code {exitcode}, killed by {name}{hint})")
    return (f"worker {worker_id} exited {deaths} times in a row before its model was loaded (last: exit code "
            f"{exitcode}); the worker's own error, if any, is printed on stderr above")


class LocalExecutor(Executor):
    """N worker processes fed through per-worker queues.

    A worker that dies before it has loaded its model ``MAX_DEATHS_WHILE_LOADING`` times in a
    row is reported as a fatal ``WorkerFailed`` (restarting it again would loop forever).

    Args:
        predictor: an unloaded Predictor (pickled to each worker, loaded there once).
        num_workers: N >= 1.
        threads_per_worker: intra-op threads per worker (default cores // N).
        env: extra environment variables for the workers.
        start_method: "forkserver" | "spawn" (default ``choose_start_method()``).
    """

    runs_shards = True  # workers on this machine read the input file themselves (sharded mode)

    def __init__(self, predictor: Predictor, num_workers: int, threads_per_worker: int | None = None,
                 env: dict[str, str] | None = None, start_method: str | None = None):
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self.predictor = predictor
        self.num_workers = num_workers
        self.threads = threads_per_worker or default_threads(num_workers)
        self.env = dict(env or {})
        self.start_method = choose_start_method(start_method)
        self._ctx = make_context(self.start_method, predictor)
        self._slots: list[_Slot | None] = [None] * num_workers
        self._load_deaths = [0] * num_workers  # consecutive deaths before WorkerReady
        self.restarts = 0

    def start(self, first: int = 0, count: int | None = None) -> None:
        """Spawn workers ``first`` .. ``count - 1`` (default: all); a staged start spawns worker
        0 alone, then the rest (``executors.pool.plan_start``)."""
        for w in range(first, self.num_workers if count is None else count):
            self._spawn(w)

    def shrink(self, num_workers: int) -> None:
        """Run only the first ``num_workers`` workers (call before the others are spawned)."""
        self.num_workers = num_workers
        del self._slots[num_workers:]
        del self._load_deaths[num_workers:]

    def _spawn(self, w: int) -> None:
        inbox = self._ctx.Queue()
        reader, writer = self._ctx.Pipe(duplex=False)
        # A forked worker inherits the forkserver's environment, taken when the server started:
        # send the driver's current one along, as a spawned worker would have inherited it.
        current = dict(os.environ) if self.start_method == "forkserver" else {}
        env = {**current, **self.env, "PARAINFER_NUM_WORKERS": str(self.num_workers), **die_with_parent_env()}
        for attempt in range(3):
            proc = self._ctx.Process(target=worker_main, name=f"{PROCESS_NAME_PREFIX}worker-{w}", daemon=True,
                                     args=(w, self.predictor, inbox, writer, self.threads, env))
            try:
                proc.start()
                break
            except (EOFError, ConnectionError):  # the forkserver died (e.g. a process-group signal):
                if attempt == 2:                 # multiprocessing starts a new one once it has exited
                    raise
                time.sleep(0.2)
        writer.close()  # the worker holds the only write end: EOF on the reader means it died
        self._slots[w] = _Slot(proc, inbox, reader)

    def restart(self, worker_id: int) -> None:
        """Replace a worker with a fresh process (its model is loaded again)."""
        slot = self._slots[worker_id]
        if slot is not None:
            self._close(slot)
        self.restarts += 1
        self._spawn(worker_id)

    def kill(self, worker_id: int) -> None:
        """SIGKILL a worker (for a hung task); the next ``poll`` reports its death."""
        slot = self._slots[worker_id]
        if slot is not None and slot.proc.is_alive():
            slot.proc.kill()

    def retire(self, worker_id: int) -> None:
        """Ask a worker that holds no task to exit (its end of queue); the next polls report
        the exit as a ``WorkerFailed`` (exit code 0)."""
        slot = self._slots[worker_id]
        if slot is not None:
            slot.inbox.put(None)

    def alive(self, worker_id: int) -> bool:
        """True while the worker's process is running."""
        slot = self._slots[worker_id]
        return slot is not None and slot.proc.is_alive()

    def submit(self, worker_id: int, task: Task) -> None:
        slot = self._slots[worker_id]
        if slot is None:
            raise RuntimeError(f"worker {worker_id} is not running")
        slot.held[task.index] = task
        slot.submitted[task.index] = time.perf_counter()
        slot.inbox.put(task)

    def in_flight(self, worker_id: int) -> int:
        slot = self._slots[worker_id]
        return len(slot.held) if slot is not None else 0

    def held(self, worker_id: int) -> list[Task]:
        """Tasks submitted to ``worker_id`` and not finished, in submission order."""
        slot = self._slots[worker_id]
        return list(slot.held.values()) if slot is not None else []

    def running(self, worker_id: int) -> tuple[int, float] | None:
        """(Task.index, perf_counter start) of the task ``worker_id`` is running, or None."""
        slot = self._slots[worker_id]
        return slot.running() if slot is not None else None

    def pid(self, worker_id: int) -> int | None:
        slot = self._slots[worker_id]
        return slot.proc.pid if slot is not None else None

    def wait_handles(self) -> list[Any]:
        """What ``poll`` waits on (each live worker's result pipe and process sentinel), for a caller
        that waits on them together with its own connections (``executors.remote.relay``)."""
        return [h for s in self._slots if s is not None for h in (s.results, s.proc.sentinel)]

    def poll(self, timeout: float) -> list[Event]:
        live = {w: s for w, s in enumerate(self._slots) if s is not None}
        handles: dict[Any, int] = {}
        for w, s in live.items():
            handles[s.results] = w
            handles[s.proc.sentinel] = w
        events: list[Event] = []
        dead: set[int] = set()
        for ready in wait(list(handles), timeout=timeout):
            w = handles[ready]
            if ready is live[w].results:
                dead_now = self._drain(live[w], events)
            else:
                dead_now = True
            if dead_now:
                dead.add(w)
        for w in sorted(dead):
            slot = live[w]
            self._drain(slot, events)  # everything it sent before dying is still readable
            slot.proc.join(timeout=1)
            running = slot.running()[0] if slot.held else None
            reason = f"worker {w} (pid {slot.proc.pid}) exited with code {slot.proc.exitcode}"
            if slot.ready:
                self._load_deaths[w] = 0
            elif not any(isinstance(e, WorkerFailed) and e.worker_id == w for e in events):
                self._load_deaths[w] += 1
            fatal = self._load_deaths[w] >= MAX_DEATHS_WHILE_LOADING
            if fatal:
                reason = load_deaths_reason(w, self._load_deaths[w], slot.proc.exitcode)
            events.append(WorkerFailed(w, reason, list(slot.held.values()), fatal=fatal, running=running))
            self._close(slot)
            self._slots[w] = None
        return events

    def _drain(self, slot: _Slot, events: list[Event]) -> bool:
        """Read all pending messages of one worker; True when its pipe is closed (it died)."""
        try:
            while slot.results.poll():
                ev = slot.results.recv()
                if isinstance(ev, (TaskResult, ShardResult, WriteFailed, WorkerReady)):
                    slot.free_since = time.perf_counter()
                if isinstance(ev, WorkerReady):
                    slot.ready = True
                if isinstance(ev, (TaskResult, ShardResult, WriteFailed)):
                    slot.held.pop(ev.task_index, None)
                    slot.submitted.pop(ev.task_index, None)
                events.append(ev)
        except (EOFError, OSError):
            return True
        except Exception:  # noqa: BLE001 - a message cut short by a kill does not unpickle
            return True
        return False

    def _close(self, slot: _Slot) -> None:
        if slot.proc.is_alive():
            slot.proc.kill()
        slot.proc.join(timeout=5)
        slot.results.close()
        slot.inbox.close()
        slot.inbox.cancel_join_thread()

    def shutdown(self) -> None:
        for slot in self._slots:
            if slot is not None and slot.proc.is_alive():
                try:
                    slot.inbox.put(None)
                except (OSError, ValueError):
                    pass
        for w, slot in enumerate(self._slots):
            if slot is not None:
                slot.proc.join(timeout=10)
                self._close(slot)
                self._slots[w] = None
