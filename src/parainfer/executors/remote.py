"""The executor contract over one connection: a warm pool's workers used by a job in another process.

A pool daemon (``parainfer pool up``, ``batch.pools``) holds a normal started executor (local
processes) and ``relay``s the contract to one driver at a time over a Unix socket
(``multiprocessing.connection``, authenticated with the pool's token: an HMAC challenge, so
only a process that can read the token file may connect). In the driver, ``RemoteExecutor``
implements :class:`~parainfer.executors.base.Executor` by sending the calls that change state
(``submit``, ``restart``, ``kill``, ``retire``) and receiving the pool executor's events as they
come, unchanged: a worker that dies in the pool is reported as the same ``WorkerFailed``, so
recovery and exactly-once stay the driver's. ``in_flight`` and ``running`` are answered from the
driver's own record of what it submitted (no round trip).

Messages (pickled tuples): driver -> pool ``("hello", pid)``, ``("submit", worker, task)``,
``("restart" | "kill" | "retire", worker)``; pool -> driver ``("hello", info)`` or
``("busy", pid)`` (another job holds the pool), then ``("events", [Event, ...])``.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from multiprocessing.connection import Client, Connection, wait
from typing import Any, Callable

from parainfer.errors import JobError
from parainfer.executors.base import (Event, Executor, ShardResult, Task, TaskResult, WorkerFailed, WorkerReady,
                                      WriteFailed)
from parainfer.executors.local import _Slot


class PoolBusy(Exception):
    """The pool is running another job; ``pid`` is that job's driver process."""

    def __init__(self, pid: int):
        super().__init__(pid)
        self.pid = pid


def connect(address: str, authkey: bytes, timeout_s: float = 10.0) -> tuple[Connection, dict[str, Any]]:
    """Connect to the pool listening on the Unix socket ``address`` and greet it.

    Returns (the connection, the pool's hello: ``num_workers``, ``threads``, ``ready`` (worker ids
    with a loaded model), ``model_info``, ``describe``). Raises PoolBusy when another job holds the
    pool, ConnectionError when it does not answer within ``timeout_s`` seconds, OSError when
    nothing listens there, ``multiprocessing.AuthenticationError`` for a wrong token."""
    conn = Client(address, family="AF_UNIX", authkey=authkey)
    conn.send(("hello", os.getpid()))
    if not conn.poll(timeout_s):
        conn.close()
        raise ConnectionError(f"the pool at {address} did not answer within {timeout_s:.0f} s")
    kind, body = conn.recv()
    if kind == "busy":
        conn.close()
        raise PoolBusy(body)
    return conn, body


class RemoteExecutor(Executor):
    """The driver's side of a pool: the executor contract relayed to the pool's executor.

    Args:
        conn: a connection from ``connect``. hello: the pool's hello (from ``connect``).
        name: the pool's name (for messages and the report).

    ``start`` starts nothing (the pool's workers are running); ``shutdown`` only disconnects
    (the pool keeps its workers; it kills and restarts any that still hold this job's tasks).
    ``poll`` raises JobError when the pool went away during the job.
    """

    runs_shards = False  # sharded mode is not relayed (``batch.pools`` refuses it)

    def __init__(self, conn: Connection, hello: dict[str, Any], name: str):
        self.conn, self.name = conn, name
        self.num_workers = int(hello["num_workers"])
        self.threads = hello.get("threads")
        self._describe = dict(hello.get("describe") or {})
        self._slots = [_Slot(None, None, None) for _ in range(self.num_workers)]

    def start(self, count: int | None = None) -> None:
        """Nothing to start: the pool's workers are loaded (or loading: WorkerReady follows)."""

    def _send(self, *message: Any) -> None:
        try:
            self.conn.send(message)
        except (OSError, EOFError):
            raise JobError(f"pool {self.name} stopped during the job (its connection closed)") from None

    def submit(self, worker_id: int, task: Task) -> None:
        slot = self._slots[worker_id]
        slot.held[task.index] = task
        slot.submitted[task.index] = time.perf_counter()
        self._send("submit", worker_id, task)

    def poll(self, timeout: float) -> list[Event]:
        events: list[Event] = []
        try:
            if not self.conn.poll(timeout):
                return events
            while True:
                kind, body = self.conn.recv()
                if kind == "events":
                    events.extend(body)
                if not self.conn.poll(0):
                    break
        except (EOFError, OSError):
            raise JobError(f"pool {self.name} stopped during the job (its connection closed)") from None
        for ev in events:
            slot = self._slots[ev.worker_id]
            if isinstance(ev, (TaskResult, ShardResult, WriteFailed, WorkerReady)):
                slot.free_since = time.perf_counter()
            if isinstance(ev, (TaskResult, ShardResult, WriteFailed)):
                slot.held.pop(ev.task_index, None)
                slot.submitted.pop(ev.task_index, None)
            elif isinstance(ev, WorkerFailed):
                slot.held.clear()
                slot.submitted.clear()
        return events

    def in_flight(self, worker_id: int) -> int:
        return len(self._slots[worker_id].held)

    def held(self, worker_id: int) -> list[Task]:
        """Tasks submitted to ``worker_id`` and not finished, in submission order."""
        return list(self._slots[worker_id].held.values())

    def running(self, worker_id: int) -> tuple[int, float] | None:
        return self._slots[worker_id].running()

    def restart(self, worker_id: int) -> None:
        self._send("restart", worker_id)

    def kill(self, worker_id: int) -> None:
        self._send("kill", worker_id)

    def retire(self, worker_id: int) -> None:
        self._send("retire", worker_id)

    def shutdown(self) -> None:
        """Disconnect from the pool (its workers stay up)."""
        self.conn.close()

    def describe(self) -> dict[str, Any]:
        return {**self._describe, "name": "pool", "pool": self.name}


def relay(executor: Any, conn: Connection, hello: dict[str, Any], stop: Callable[[], bool],
          on_event: Callable[[Event], None]) -> None:
    """Serve one driver on ``conn`` until it disconnects or ``stop()`` is true: apply its calls to
    the started ``executor`` and send it every event the executor reports (each also passed to
    ``on_event``, the pool's own bookkeeping). ``hello``: what ``connect`` returns to the driver.

    Waits on the connection and the executor's handles together (``wait_handles``, the local
    executor's pipes and process sentinels), so a task reaches its worker and a result the driver
    without a polling delay. On return, a worker that still holds tasks of the driver is killed
    (the pool restarts it): the next job never sees a result of this one."""
    held: dict[int, set[int]] = {w: set() for w in range(executor.num_workers)}
    conn.send(("hello", hello))
    # Events go out from their own thread, so this loop keeps reading the driver's calls while a
    # send waits for the driver to read (two full socket buffers would otherwise deadlock).
    outbox: queue.Queue[Any] = queue.Queue()
    sender = threading.Thread(target=_send_all, args=(conn, outbox), name="parainfer-pool-relay", daemon=True)
    sender.start()
    try:
        while not stop():
            handles = [conn, *executor.wait_handles()] if hasattr(executor, "wait_handles") else [conn]
            ready = wait(handles, timeout=0.5 if len(handles) > 1 else 0.01)
            if conn in ready:
                while conn.poll(0):
                    kind, *args = conn.recv()
                    if kind == "submit":
                        worker, task = args
                        held[worker].add(task.index)
                        executor.submit(worker, task)
                    elif kind in ("restart", "kill", "retire"):
                        getattr(executor, kind)(args[0])
            events = executor.poll(0)
            for ev in events:
                if isinstance(ev, (TaskResult, ShardResult, WriteFailed)):
                    held[ev.worker_id].discard(ev.task_index)
                elif isinstance(ev, WorkerFailed):
                    held[ev.worker_id].clear()
                on_event(ev)
            if events:
                outbox.put(("events", events))
    except (EOFError, OSError):
        pass  # the driver disconnected (its job ended, or it died)
    finally:
        outbox.put(None)
        sender.join(timeout=5)
        conn.close()
        for worker, tasks in held.items():
            if tasks:
                executor.kill(worker)


def _send_all(conn: Connection, outbox: queue.Queue[Any]) -> None:
    """Send each message of ``outbox`` on ``conn`` until None (or the driver is gone)."""
    while (message := outbox.get()) is not None:
        try:
            conn.send(message)
        except (OSError, EOFError):
            return
