"""Routes model *batches* (embed, classify, translate) to N executor workers, one model replica
each (the generate server's ``generate.sequence_router`` routes sequences to engine replicas).

``BatchRouter`` owns an Executor (processes or Ray actors): it sends each batch from the batcher
to the ready replica with the least outstanding work, resolves the items' futures from the
results (``InputFailed`` for a record the model raised on), and restarts dead replicas, running
their batches once more before failing them with ``ReplicaUnavailable``. A poll thread feeds
executor events to the event loop, where all routing state lives. Rules: docs/serving.md, "The
path of a request", step 4. The replica set may change (``serving.autoscale``): ``add_replica``
starts a slot on the executor's restart path (routed to once loaded), ``remove_replica`` stops
routing to one, lets its batches finish, then retires it (``Executor.retire``).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from parainfer.executors.base import Event, Executor, TaskResult, WorkerFailed, WorkerReady
from parainfer.serving.autoscale import ReplicaCounts
from parainfer.serving.embed.batcher import Item
from parainfer.executors.base import Task

log = logging.getLogger(__name__)


class ReplicaUnavailable(Exception):
    """No replica could run the input (crashed twice, or every model failed to load): HTTP 503.

    Attributes:
        public: the message without ``detail`` (a worker's error text stays in the server log).
    """

    def __init__(self, message: str, detail: str = ""):
        super().__init__(f"{message}: {detail}" if detail else message)
        self.public = message


class InputFailed(Exception):
    """The model raised on this one input (the rest of its batch succeeded): HTTP 422."""


@dataclass
class _Batch:
    items: list[Item]
    tokens: int
    attempt: int = 0
    replica: int | None = None
    task_index: int = -1


@dataclass
class ReplicaState:
    """What the router knows of one replica."""

    ready: bool = False
    dead: bool = False  # its model failed to load: never restarted
    active: bool = True  # False: a slot the autoscaler has not started (or has stopped)
    draining: bool = False  # removed: takes no new batch; retired once it holds none
    retiring: bool = False  # retire sent: its end (a WorkerFailed) turns the slot off
    batches: dict[int, _Batch] = field(default_factory=dict)  # task index -> batch in flight
    restarts: int = 0
    busy_s: float = 0.0
    load_s: float | None = None
    info: dict[str, Any] = field(default_factory=dict)  # the predictor's describe() as loaded

    @property
    def tokens(self) -> int:
        return sum(b.tokens for b in self.batches.values())


class BatchRouter:
    """Routes batches to replicas and resolves their items' futures.

    Args:
        executor: an unstarted Executor (``start`` starts it).
        max_in_flight: most batches queued on one replica (1: the batcher keeps the rest,
            so later batches are formed from more waiting inputs).
        retries: times a batch held by a dead replica is run again.
        on_capacity: called (on the loop) when a slot may have freed up: the batcher's ``wake``.
        on_batch_done: called with (replica, batch size, busy seconds, tokens computed) after each
            result; tokens computed: padded tokens over the worker's forward passes (after its
            length groups, ``TokenCounts.padded``), None when the worker did not count them.
        on_restart: called with the replica id when it is restarted.
        initial: replicas started by ``start`` (default all of the executor's ``num_workers``;
            fewer under autoscaling, the other slots are started by ``add_replica``).
    """

    def __init__(self, executor: Executor, max_in_flight: int = 1, retries: int = 1,
                 on_capacity: Callable[[], None] = lambda: None,
                 on_batch_done: Callable[[int, int, float, int | None], None] = lambda w, n, s, t: None,
                 on_restart: Callable[[int], None] = lambda w: None, initial: int | None = None):
        self.executor = executor
        self.max_in_flight, self.retries = max_in_flight, retries
        self.on_capacity, self.on_batch_done, self.on_restart = on_capacity, on_batch_done, on_restart
        self.initial = executor.num_workers if initial is None else initial
        self.replicas = [ReplicaState(active=w < self.initial) for w in range(executor.num_workers)]
        self._task_ids = itertools.count()
        self._retry: collections.deque[_Batch] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.all_loaded_once = False

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Start the workers (they load in the background) and the poll thread. Call on the loop."""
        self._loop = asyncio.get_running_loop()
        if self.initial < self.executor.num_workers:
            self.executor.start(count=self.initial)
        else:
            self.executor.start()
        self._thread = threading.Thread(target=self._poll_forever, name="parainfer-serve-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the poll thread and the workers (blocking; run it in a thread)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.executor.shutdown()

    def _poll_forever(self) -> None:
        assert self._loop is not None
        while not self._stop.is_set():
            t = time.monotonic()
            events = self.executor.poll(timeout=0.05)
            if events:
                try:
                    self._loop.call_soon_threadsafe(self._handle_events, events)
                except RuntimeError:  # the loop closed under us: shutting down
                    return
            elif time.monotonic() - t < 0.01:
                time.sleep(0.01)  # no live worker to wait on (all restarting)

    # -- state seen by the app -------------------------------------------------------------
    @property
    def ready_count(self) -> int:
        """Replicas routed to now (loaded, not draining)."""
        return sum(self._routable(r) for r in self.replicas)

    @property
    def all_dead(self) -> bool:
        return all(r.dead for r in self.replicas if r.active)

    @staticmethod
    def _routable(r: ReplicaState) -> bool:
        return r.ready and r.active and not r.draining

    def idle_replicas(self) -> int:
        """Ready replicas that hold no batch (the batcher spreads waiting inputs over them)."""
        return sum(1 for r in self.replicas if self._routable(r) and not r.batches)

    def free_slots(self) -> int:
        """Batches the batcher may dispatch now (retries waiting go first)."""
        free = sum(self.max_in_flight - len(r.batches) for r in self.replicas if self._routable(r))
        return max(0, free - len(self._retry))

    # -- the replica set (``serving.autoscale.Scalable``; on the loop) ------------------------
    def ongoing(self) -> int:
        """Inputs in batches on replicas or waiting for a retry (the batcher's queue is apart)."""
        held = sum(len(b.items) for r in self.replicas for b in r.batches.values())
        return held + sum(len(b.items) for b in self._retry)

    def replica_counts(self) -> ReplicaCounts:
        """Replicas by state (dead ones, given up on, are in none)."""
        live = [r for r in self.replicas if r.active and not r.dead]
        return ReplicaCounts(starting=sum(not r.ready and not r.draining for r in live),
                             ready=sum(self._routable(r) for r in live),
                             draining=sum(r.draining for r in live))

    def add_replica(self) -> int | None:
        """Start the first slot not in use (``Executor.restart``: the same start path as after a
        crash); routed to once its WorkerReady arrives. None when every slot is in use."""
        free = [w for w, r in enumerate(self.replicas) if not r.active]
        if not free:
            return None
        w = free[0]
        try:
            self.executor.restart(w)
        except (EOFError, OSError) as exc:  # no process could start now: the next tick tries again
            log.error("replica %d could not be started (%s: %s)", w, type(exc).__name__, exc)
            return None
        self.replicas[w] = ReplicaState(restarts=self.replicas[w].restarts, busy_s=self.replicas[w].busy_s)
        return w

    def remove_replica(self) -> int | None:
        """Take the ready replica holding the least work out of routing and retire it once its
        batches are done. None when that would leave no replica routed to while another is
        still loading, or none is ready."""
        ready = [w for w, r in enumerate(self.replicas) if self._routable(r)]
        starting = self.replica_counts().starting
        if not ready or (len(ready) == 1 and starting):
            return None
        w = min(ready, key=lambda v: (len(self.replicas[v].batches), self.replicas[v].tokens, -v))
        self.replicas[w].draining = True
        self._retire_if_drained(w)
        return w

    def _retire_if_drained(self, w: int) -> None:
        rep = self.replicas[w]
        if not rep.draining or rep.batches or rep.retiring:
            return
        rep.retiring = True
        try:
            self.executor.retire(w)
        except Exception as exc:  # noqa: BLE001 - gone already: its WorkerFailed (or none) follows
            log.warning("replica %d could not be retired (%s); it is left off", w, exc)
            rep.active = rep.ready = False

    # -- routing ---------------------------------------------------------------------------
    def dispatch(self, items: list[Item]) -> None:
        """Send one batch to the least-loaded ready replica (the batcher's ``dispatch``)."""
        self._send(_Batch(items, sum(it.tokens for it in items)))

    def _pick(self) -> int | None:
        room = [w for w, r in enumerate(self.replicas) if self._routable(r) and len(r.batches) < self.max_in_flight]
        if not room:
            return None
        # ties (idle replicas) go to the one that has worked least, so that work is spread over all
        return min(room, key=lambda w: (self.replicas[w].tokens, len(self.replicas[w].batches),
                                        self.replicas[w].busy_s, w))

    def _send(self, batch: _Batch) -> None:
        w = self._pick()
        if w is None:
            self._retry.append(batch)
            return
        batch.replica, batch.task_index = w, next(self._task_ids)
        task = Task(index=batch.task_index, seqs=list(range(len(batch.items))),
                    texts=[it.text for it in batch.items], tokens=batch.tokens,
                    padded_tokens=len(batch.items) * max(it.tokens for it in batch.items), attempt=batch.attempt)
        try:
            self.executor.submit(w, task)
        except Exception:  # noqa: BLE001 - the slot closed under us: its death event follows
            self._retry_or_fail(batch, f"replica {w} went away while the batch was sent")
            return
        self.replicas[w].batches[batch.task_index] = batch

    def _drain_retries(self) -> None:
        while self._retry and self._pick() is not None:
            self._send(self._retry.popleft())

    # -- events (on the loop) --------------------------------------------------------------
    def _handle_events(self, events: list[Event]) -> None:
        for ev in events:
            if isinstance(ev, WorkerReady):
                rep = self.replicas[ev.worker_id]
                rep.ready, rep.load_s, rep.info = True, ev.load_s, ev.info
                wanted = sum(r.active and not r.draining for r in self.replicas)
                self.all_loaded_once = self.all_loaded_once or self.ready_count == wanted
            elif isinstance(ev, TaskResult):
                self._on_result(ev)
            elif isinstance(ev, WorkerFailed):
                self._on_failed(ev)
        self._drain_retries()
        self.on_capacity()

    def _on_result(self, res: TaskResult) -> None:
        rep = self.replicas[res.worker_id]
        batch = rep.batches.pop(res.task_index, None)
        if batch is None:
            return  # a result of a batch already given up on
        busy = res.t_end - res.t_start
        rep.busy_s += busy
        errors = dict(res.errors)
        now = time.monotonic()
        for pos, (item, out) in enumerate(zip(batch.items, res.outputs)):
            if item.future.done():
                continue
            item.compute_s, item.t_done = busy, now
            if out is None:
                item.future.set_exception(InputFailed(errors.get(pos, "model error")))
            else:
                item.future.set_result(out)
        self.on_batch_done(res.worker_id, len(batch.items), busy, res.counts.padded if res.counts else None)
        self._retire_if_drained(res.worker_id)

    def _on_failed(self, ev: WorkerFailed) -> None:
        w = ev.worker_id
        rep = self.replicas[w]
        rep.ready = False
        held, rep.batches = list(rep.batches.values()), {}
        if rep.draining or not rep.active:  # retired (or died while draining): the slot is off
            rep.active = rep.draining = rep.retiring = False
        elif ev.fatal:
            rep.dead = True
        elif not self._stop.is_set():
            rep.restarts += 1
            try:
                self.executor.restart(w)
                self.on_restart(w)
            except (EOFError, OSError) as exc:  # no process could start (shutting down, out of resources)
                log.error("replica %d could not be restarted (%s: %s); it is given up", w, type(exc).__name__, exc)
                rep.dead = True
        for batch in held:
            self._retry_or_fail(batch, ev.reason.strip().splitlines()[0] if ev.reason.strip() else "replica died")
        if self.all_dead:
            for batch in self._retry:
                _fail(batch, "every replica failed to load the model")
            self._retry.clear()

    def _retry_or_fail(self, batch: _Batch, reason: str) -> None:
        if batch.attempt >= self.retries or self.all_dead:
            _fail(batch, f"replica failed {batch.attempt + 1} time(s) running this input", reason)
            return
        batch.attempt += 1
        self._retry.append(batch)

    def model_info(self) -> list[dict[str, Any]]:
        """The loaded model's ``describe()`` of each replica that has loaded (in replica order)."""
        return [r.info for r in self.replicas if r.info and r.active]

    def describe(self) -> list[dict[str, Any]]:
        """Per-replica state for /health."""
        return [{"replica": w, "ready": r.ready, "dead": r.dead, "in_flight": len(r.batches),
                 "restarts": r.restarts, "busy_s": round(r.busy_s, 3), "load_s": r.load_s,
                 **({"draining": True} if r.draining else {})}
                for w, r in enumerate(self.replicas) if r.active]


def _fail(batch: _Batch, reason: str, detail: str = "") -> None:
    for item in batch.items:
        if not item.future.done():
            item.future.set_exception(ReplicaUnavailable(reason, detail))
