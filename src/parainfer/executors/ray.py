"""The Ray executor: N Ray core actors on a cluster, one model replica each (``--executor ray``).

The driver keeps parainfer's own scheduling policy, merger, checkpoint, recovery and report;
Ray only places and runs the actors (``executors/ray_actor.py``). Each task, or ``ShardTask``
(``executors/ray_shards.py``), is one actor call whose ObjectRef the executor holds until it
resolves; an actor that dies becomes one ``WorkerFailed``. Actors have ``max_restarts=0``: the
driver restarts them, so ``batch.recovery.RecoveryPolicy`` counts and plans restarts and retries
as for processes. A lost node (``ray_cluster.NodeWatch``, seconds, where Ray's own health checks
take up to a minute) fails all its workers at once, prints one line saying what happens next,
and its workers restart where there is room. Placement, death detection and clocks:
docs/cluster.md, "How the executor uses Ray".
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from parainfer.errors import JobError, UsageError
from parainfer.executors.base import (Event, Executor, ShardResult, ShardTask, TaskResult, WorkerFailed, WorkerReady,
                                      WorkerRetired, WriteFailed)
from parainfer.executors.local import MAX_DEATHS_WHILE_LOADING, default_threads
from parainfer.executors.ray_cluster import (PASSED_ENV_PREFIXES, NodeWatch, check_room, cluster_id, connect,
                                             draining_nodes, load_error, pick_node, raylet_ports, room_for, running_task)
from parainfer.executors.ray_ship import Shipment, check_modules, module_sources, plan, ship_error
from parainfer.executors.ray_shards import Probe, place_shard_result, shared_path_error
from parainfer.models.base import Predictor
from parainfer.executors.base import Task

ACTOR_THREADS = 16  # most calls in flight per actor (record mode keeps prefetch + 1, the server 1)
SETTLE_S = 10.0  # longest wait for a dead actor's calls to resolve (they do once Ray knows it died)
TEND_S = 1.0  # how often the executor looks for drained nodes and for room to fill free worker slots


@dataclass
class _Slot:
    """One actor incarnation: its handle, the load call, and the task calls it holds."""

    actor: Any
    load_ref: Any
    watch_ref: Any  # never resolves while the actor lives
    held: dict[int, tuple[Any, Task, float]] = field(default_factory=dict)  # index -> (ref, task, submitted)
    free_since: float = field(default_factory=time.perf_counter)  # end of its last task (driver clock)
    ready: bool = False
    turns: int = 0  # calls given a turn so far (load is turn 0)
    node: str | None = None
    pid: int | None = None


class RayExecutor(Executor):
    """N actors on a Ray cluster.

    Args:
        predictor: an unloaded Predictor (sent to each actor, loaded there once).
        num_workers: N >= 1 actors.
        threads_per_worker: intra-op threads per actor (default: cpus_per_worker rounded up,
            or usable cores // N when Ray is started for the job).
        env: extra environment variables for the actors (PARAINFER_*, HF_*, TRANSFORMERS_*
            and TOKENIZERS_* variables of the driver are passed on too).
        address: the cluster ("HOST:PORT"); None: RAY_ADDRESS, else a local Ray started for
            the job (and stopped after it).
        cpus_per_worker, gpus_per_worker: Ray resources each actor asks for (> 0 / >= 0).
        min_workers: elastic (``--workers MIN:MAX``, ``num_workers`` being MAX): the cluster
            needs room for MIN actors to start; as many as have room start at once (at least
            MIN), and a free slot is filled whenever room appears (a node joins). None: MIN = N.

    Elastic workers: every ``TEND_S`` the executor asks Ray for the nodes being drained; a
    worker on one gets no new task (``in_flight`` reads as full) and, once it has finished the
    tasks it holds, is stopped and reported as ``WorkerRetired`` (one stderr line). A free slot
    (not started yet with ``min_workers``, retired, or left out after a lost node) is filled, one
    actor each, while the live nodes that are not draining have room for it (this job's actors
    counted, ``room_for``); a stderr line says so when it is ready.

    ``start`` raises UsageError when the cluster has fewer CPUs or GPUs in all than the
    actors ask for (they would wait forever). A node found lost (``NodeWatch``: its raylet
    refuses connections, or has not answered for ``NODE_LOST_S``) fails every worker on it at
    once (``WorkerFailed``, no task blamed) and prints one line to stderr: ``node ADDRESS lost
    (why; N workers: ids): restarting them on the remaining nodes``, or, when the nodes left have
    no room (this job's actors counted), which are left out and how many workers go on; with no
    room and no worker left, the failures are fatal (the job stops; a rerun resumes). A lost
    node's address is not used again by this executor. Runs shards (sharded mode) when every
    node sees the input and the output's folder at the same path; ``poll`` raises UsageError
    naming the node and the path when one does not (``ray_shards``).
    """

    runs_shards = True  # each actor reads its shard and writes its parts (a shared file system)

    def __init__(self, predictor: Predictor, num_workers: int, threads_per_worker: int | None = None,
                 env: dict[str, str] | None = None, address: str | None = None, cpus_per_worker: float = 1.0,
                 gpus_per_worker: float = 0.0, min_workers: int | None = None):
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if min_workers is not None and not 1 <= min_workers <= num_workers:
            raise UsageError(f"--workers MIN:MAX needs 1 <= MIN <= MAX, got {min_workers}:{num_workers}")
        if cpus_per_worker <= 0 or gpus_per_worker < 0:
            raise UsageError(f"--cpus-per-worker must be > 0 and --gpus-per-worker >= 0, got "
                             f"{cpus_per_worker} and {gpus_per_worker}")
        self.predictor, self.num_workers = predictor, num_workers
        self.min_workers = min_workers or num_workers
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.cpus, self.gpus = cpus_per_worker, gpus_per_worker
        self.threads = threads_per_worker or (math.ceil(cpus_per_worker) if self.address
                                              else default_threads(num_workers))
        self.env = {**{k: v for k, v in os.environ.items() if k.startswith(PASSED_ENV_PREFIXES)}, **(env or {}),
                    "PARAINFER_NUM_WORKERS": str(num_workers)}
        self._slots: list[_Slot | None] = [None] * num_workers
        self._load_deaths = [0] * num_workers
        self._placements: list[list[str]] = [[] for _ in range(num_workers)]  # nodes of each incarnation
        self._lock = threading.RLock()
        self._owns_ray = False
        self._actor_class: Any = None
        self._probe = Probe()  # the shared-file-system probe files of sharded mode
        self._watch: NodeWatch | None = None
        self._ports: dict[str, int] = {}  # node address -> its raylet's port (for NodeWatch)
        self._lost: set[str] = set()  # node addresses found lost
        self._left_out: set[int] = set()  # workers of lost nodes not restarted: no room left
        self._shipment = Shipment()  # what the actors need from the driver's disk (ray_ship)
        self._fetched: dict[str, list[str]] = {}  # node -> shipped paths its actors fetched
        self._free: set[int] = set()  # slots without an actor that room may fill (never started, retired, left out)
        self._joining: set[int] = set()  # slots filled after the start, not yet ready
        self._retiring: dict[int, str] = {}  # worker -> address of its draining node
        self._draining: set[str] = set()  # addresses of nodes being drained
        self._changes: list[dict[str, Any]] = []  # {"worker", "node", "event": joined|retired, "at_s"}
        self._t_start = time.perf_counter()
        self._next_tend = 0.0
        self.restarts = 0

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, count: int | None = None) -> None:
        """Start actors 0 .. ``count - 1`` (default: all ``num_workers``; the others are started
        later with ``restart``, by a server's autoscaler)."""
        self._connect()
        self._t_start = time.perf_counter()
        given = count is not None
        if count is None:
            count = self.num_workers
            if self.min_workers < self.num_workers:  # elastic: as many as have room now, at least MIN
                count = max(self.min_workers, min(self.num_workers, room_for(self.cpus, self.gpus, [], self._lost)))
        for w in range(count):
            self._spawn(w)
        # Elastic slots not started yet are filled as room appears; a server's autoscaler (``count``
        # given) starts its own with ``restart``.
        self._free = set() if given else set(range(count, self.num_workers))
        self._watch = NodeWatch(self._watched, head=self.address, cluster_id=cluster_id())
        self._watch.start()

    def _watched(self) -> dict[str, int]:
        """NodeWatch's targets: {address: raylet port} of the nodes holding loaded workers."""
        with self._lock:
            nodes = {s.node for s in self._slots if s is not None and s.ready}
            return {n: self._ports[n] for n in nodes if n in self._ports and n not in self._lost}

    def _connect(self) -> None:
        import ray

        from parainfer.executors.ray_actor import RayWorker

        # A Ray the job starts for itself runs on this machine only: nothing to ship.
        modules = module_sources(self.predictor) if self.address else []
        check_modules(modules)
        self._owns_ray = connect(self.address, math.ceil(self.num_workers * self.cpus),
                                 {"py_modules": modules} if modules else None)
        try:
            check_room(self.address, self.min_workers, self.cpus, self.gpus)
            self._shipment = plan(self.predictor, modules) if self.address else Shipment()
        except UsageError:
            self.shutdown()
            raise
        # Calls wait for their turn in the actor, so it needs a thread per call in flight.
        self._actor_class = ray.remote(max_concurrency=ACTOR_THREADS, concurrency_groups={"watch": 1})(RayWorker)

    def _spawn(self, w: int, first: bool = True, avoid: str | None = None) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        node = pick_node(w, first, self.cpus, self.gpus, [s.node for s in self._slots if s is not None], avoid,
                         self._lost | self._draining)
        strategy = NodeAffinitySchedulingStrategy(node, soft=True) if node else "SPREAD"
        actor = self._actor_class.options(
            num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=0, max_task_retries=0, scheduling_strategy=strategy,
            runtime_env={"env_vars": self.env},  # one env for all actors: Ray may reuse idle processes
        ).remote(w, self.threads)
        with self._lock:
            self._slots[w] = _Slot(actor, actor.load.remote(self.predictor, self._shipment.paths),
                                   actor.watch.remote())

    def restart(self, worker_id: int) -> None:
        """Replace a worker with a fresh actor (placed wherever the cluster has room); a worker
        of a lost node that no node had room for stays stopped (``_lose_node``)."""
        with self._lock:
            slot, self._slots[worker_id] = self._slots[worker_id], None
        if slot is not None:
            self._kill_actor(slot.actor)
        self._joining.discard(worker_id)
        if worker_id in self._left_out or self._retiring.pop(worker_id, None) is not None:
            self._free.add(worker_id)  # filled again when a node has room (``_tend``)
            return
        self.restarts += 1
        last = self._placements[worker_id]  # its slot is gone already when it died: where it last loaded
        self._spawn(worker_id, first=False, avoid=last[-1] if last else None)

    def kill(self, worker_id: int) -> None:
        """Kill a worker's actor (a hung task); the next ``poll`` reports its death."""
        slot = self._slots[worker_id]
        if slot is not None:
            self._kill_actor(slot.actor)

    @staticmethod
    def _kill_actor(actor: Any) -> None:
        import ray

        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone, or its node is
            pass

    def shutdown(self) -> None:
        import ray

        if self._watch is not None:
            self._watch.stop()
        with self._lock:
            slots, self._slots = self._slots, [None] * self.num_workers
        for slot in slots:
            if slot is not None:
                self._kill_actor(slot.actor)
        self._probe.remove()
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
            self._owns_ray = False

    # -- feeding and watching ---------------------------------------------------------------------
    def submit(self, worker_id: int, task: Task | ShardTask) -> None:
        check = self._probe.check_for(task) if isinstance(task, ShardTask) else None
        with self._lock:
            slot = self._slots[worker_id]
            if slot is None:
                raise RuntimeError(f"worker {worker_id} is not running")
            if len(slot.held) >= ACTOR_THREADS:
                raise RuntimeError(f"worker {worker_id} holds {ACTOR_THREADS} tasks already (the most in flight)")
            slot.turns += 1
            slot.held[task.index] = (slot.actor.run.remote(task, slot.turns, check), task, time.perf_counter())

    def in_flight(self, worker_id: int) -> int:
        """Tasks it holds; ``ACTOR_THREADS`` (full) while it retires, so it is given no more."""
        if worker_id in self._retiring:
            return ACTOR_THREADS
        slot = self._slots[worker_id]
        return len(slot.held) if slot is not None else 0

    def running(self, worker_id: int) -> tuple[int, float] | None:
        """(Task.index, estimated start on the driver's clock) of the oldest task it holds."""
        with self._lock:
            slot = self._slots[worker_id]
            if slot is None or not slot.held:
                return None
            index, (_, _, submitted) = next(iter(slot.held.items()))
            return index, max(submitted, slot.free_since)

    def poll(self, timeout: float) -> list[Event]:
        import ray

        events: list[Event] = []
        if self._watch is not None:
            for note in self._watch.take_notes():
                print(note, file=sys.stderr, flush=True)
            if self._watch.head_reset:
                raise JobError(self._watch.head_reset)
            for address, why in self._watch.take_lost().items():
                self._lose_node(address, why, events)
        if time.perf_counter() >= self._next_tend and self._actor_class is not None:
            self._tend()
            self._next_tend = time.perf_counter() + TEND_S
        self._retire_idle(events)
        if events:
            timeout = 0.0
        with self._lock:
            owners = {}
            for w, slot in enumerate(self._slots):
                if slot is None:
                    continue
                owners[slot.watch_ref] = (w, slot)
                if not slot.ready:
                    owners[slot.load_ref] = (w, slot)
                for ref, _, _ in slot.held.values():
                    owners[ref] = (w, slot)
        if not owners:
            time.sleep(min(timeout, 0.05))
            return events
        ready, _ = ray.wait(list(owners), num_returns=1, timeout=timeout)
        if ready:
            ready, _ = ray.wait(list(owners), num_returns=len(owners), timeout=0)
        done = set(ready)
        for w, slot in {owners[r][0]: owners[r][1] for r in ready}.items():
            with self._lock:
                if self._slots[w] is slot:
                    self._collect(w, slot, done, events)
        return events

    def _collect(self, w: int, slot: _Slot, done: set, events: list[Event]) -> None:
        """Turn the resolved calls of one actor into events, in the order it ran them."""
        import ray

        if not slot.ready and slot.load_ref in done:
            try:
                loaded = ray.get(slot.load_ref)
            except ray.exceptions.RayActorError as e:
                self._died(w, slot, e, events)
                return
            except Exception as e:  # noqa: BLE001 - ModelLoadError (wrapped by Ray): fatal
                message = ship_error(e)
                if message:  # a node lacks the model's files and they are too large to ship
                    raise UsageError(message) from None
                events.append(WorkerFailed(w, load_error(e), [], fatal=True))
                self._slots[w] = None
                return
            slot.ready, slot.node, slot.pid = True, loaded["node"], loaded["pid"]
            self._ports.update(raylet_ports())  # a node started again has another raylet port
            slot.free_since = time.perf_counter()
            self._load_deaths[w] = 0
            self._placements[w].append(loaded["node"])
            if w in self._joining:
                self._joining.discard(w)
                self._changes.append({"worker": w, "node": loaded["node"], "event": "joined",
                                      "at_s": round(time.perf_counter() - self._t_start, 3)})
                print(f"worker {w} joined on node {loaded['node']} (room there): {self._live()} of "
                      f"{self.num_workers} workers", file=sys.stderr, flush=True)
            if loaded.get("fetched"):
                self._fetched.setdefault(loaded["node"], []).extend(loaded["fetched"])
            events.append(WorkerReady(w, loaded["load_s"], loaded["info"], loaded.get("phases", {})))
        for index, (ref, task, submitted) in list(slot.held.items()):
            if ref not in done:
                break  # later calls cannot have finished before this one
            try:
                value = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - RayActorError, or a result that did not arrive
                message = shared_path_error(e)
                if message:  # a node without the shared file system: no restart can help
                    raise UsageError(message) from None
                self._died(w, slot, e, events)
                return
            self._result(w, slot, index, value, submitted, events)
        if slot.watch_ref in done:  # the actor died (its results before that are in events)
            try:
                ray.get(slot.watch_ref)
            except Exception as e:  # noqa: BLE001 - RayActorError: how it died
                self._died(w, slot, e, events)

    def _result(self, w: int, slot: _Slot, index: int, value: Any, submitted: float, events: list[Event]) -> None:
        if isinstance(value, WriteFailed):  # a shard's part could not be written: the driver stops the job
            del slot.held[index]
            events.append(value)
            return
        if isinstance(value, ShardResult):  # times on the actor's clock: keep the durations
            queue_s, compute_s = value.t_start - value.t_received, value.t_end - value.t_start
        else:  # rows: encoded, unwritable, renamed
            _, outputs, errors, queue_s, compute_s, counts, *rows = value
        seen = time.perf_counter()
        start = min(max(submitted, slot.free_since), seen - compute_s)
        slot.free_since = start + compute_s
        del slot.held[index]
        if isinstance(value, ShardResult):
            events.append(place_shard_result(value, start, queue_s))
        else:
            events.append(TaskResult(index, w, outputs, errors, start - queue_s, start, start + compute_s, counts,
                                     *rows))

    def _died(self, w: int, slot: _Slot, error: BaseException | None, events: list[Event],
              lost: str | None = None) -> WorkerFailed | None:
        """Report a dead actor. Every call it held resolves once Ray knows it died (a result, or
        RayActorError): wait for them (up to SETTLE_S) and keep the results. The task it was
        running is the one it last recorded starting (``ray_actor.mark_running``); a held task
        whose result was lost in the crash is requeued like any other.

        When the actor's node does not answer either, its whole node is lost (``_lose_node``).
        ``lost`` (that path: why its node is lost): no waiting (the calls of a node off the
        network resolve only when Ray gives up on it) and no task is blamed. Returns the
        ``WorkerFailed`` appended to ``events`` (None when ``_lose_node`` reported it)."""
        import ray

        if lost is None and slot.node and slot.node not in self._lost and self._watch is not None:
            why = self._watch.verdict(slot.node, self._ports.get(slot.node))
            if why is not None:
                self._lose_node(slot.node, why, events)
                if self._slots[w] is not slot:
                    return None
        refs = [ref for ref, _, _ in slot.held.values()]
        if refs:
            ray.wait(refs, num_returns=len(refs), timeout=0 if lost else SETTLE_S)
        for index, (ref, _, submitted) in list(slot.held.items()):
            try:
                value = ray.get(ref, timeout=0)
            except Exception:  # noqa: BLE001 - failed with the actor (or not settled): the suspect
                break
            self._result(w, slot, index, value, submitted, events)
        held = [task for _, task, _ in slot.held.values()]
        where = f" (pid {slot.pid} on node {slot.node})" if slot.node else ""
        fatal = False
        if lost is not None:
            running = -1  # the node went, not a record's fault: nothing is blamed
            reason = f"worker {w}{where} lost with its node: {lost}"
        else:
            running = running_task(slot.actor)
            if running not in slot.held:
                running = -1  # it died between tasks (killed): no task is the suspect
            cause = " ".join(str(error).split())[:300]
            reason = f"worker {w}{where} died: {type(error).__name__}: {cause}"
            if not slot.ready:
                self._load_deaths[w] += 1
            fatal = self._load_deaths[w] >= MAX_DEATHS_WHILE_LOADING
            if fatal:
                reason = f"model failed to load: worker {w} died {self._load_deaths[w]} times in a row while " \
                         f"loading it (last: {reason})"
        event = WorkerFailed(w, reason, held, fatal=fatal, running=running)
        events.append(event)
        self._kill_actor(slot.actor)
        self._slots[w] = None
        return event

    def _live(self) -> int:
        return sum(1 for s in self._slots if s is not None)

    def _tend(self) -> None:
        """Retire the workers of nodes being drained and fill free slots where there is room
        (``TEND_S``; class docstring, "Elastic workers")."""
        self._draining = draining_nodes() - self._lost
        with self._lock:
            for w, slot in enumerate(self._slots):
                if slot is not None and slot.node in self._draining and w not in self._retiring:
                    self._retiring[w] = slot.node
                    print(f"node {slot.node} is being drained: worker {w} takes no new task and leaves once its "
                          f"{len(slot.held)} task{'s' if len(slot.held) != 1 else ''} are done", file=sys.stderr,
                          flush=True)
            placed = [s.node for s in self._slots if s is not None]
        if not self._free:
            return
        room = room_for(self.cpus, self.gpus, placed, self._lost | self._draining)
        for w in sorted(self._free)[:room]:
            self._free.discard(w)
            self._left_out.discard(w)
            self._joining.add(w)
            self._spawn(w, first=False)

    def _retire_idle(self, events: list[Event]) -> None:
        """Stop each retiring worker that holds no task (or has not loaded yet): a WorkerRetired."""
        for w, node in list(self._retiring.items()):
            with self._lock:
                slot = self._slots[w]
                if slot is None or slot.held:
                    continue
                self._slots[w] = None
            self._kill_actor(slot.actor)
            del self._retiring[w]
            self._free.add(w)
            self._changes.append({"worker": w, "node": node, "event": "retired",
                                  "at_s": round(time.perf_counter() - self._t_start, 3)})
            events.append(WorkerRetired(w, f"node {node} is being drained"))
            print(f"worker {w} retired (node {node} is being drained): {self._live()} of {self.num_workers} workers",
                  file=sys.stderr, flush=True)

    def _lose_node(self, address: str, why: str, events: list[Event]) -> None:
        """Node ``address`` is lost: fail each worker on it (one ``WorkerFailed`` each, appended
        to ``events``), count the room the other live nodes have for them (``room_for``), leave
        out those that do not fit (``restart`` then keeps them stopped) and print one line saying
        so. With no room and no other worker running, the failures are fatal instead, with that
        line as their reason (the job stops; its checkpoint makes a rerun resume)."""
        if address in self._lost:
            return
        self._lost.add(address)
        victims = [w for w, s in enumerate(self._slots) if s is not None and s.node == address]
        failed = [self._died(w, self._slots[w], None, events, lost=f"node {address} lost: {why}") for w in victims]
        if not victims:
            return
        with self._lock:
            live = [s.node for s in self._slots if s is not None]
        n = len(victims)
        fit = min(n, room_for(self.cpus, self.gpus, live, self._lost))
        self._left_out.update(victims[fit:])
        them = "it" if n == 1 else "them"
        head = f"node {address} lost ({why}; {n} worker{'s' if n > 1 else ''}: {', '.join(map(str, victims))})"
        if fit == n:
            line = f"{head}: restarting {them} on the remaining nodes"
        elif live or fit:
            what = (f"no node left has room for {them}" if fit == 0 else
                    f"restarting {fit} on the remaining nodes, no room for the other {n - fit}")
            line = f"{head}: {what}: going on with {len(live) + fit} of {self.num_workers} workers"
        else:
            line = (f"{head}: no node left has room for {them} and no other worker is running: the job stops "
                    "(rerun the same command to resume from its checkpoint)")
            for event in failed:
                if event is not None:
                    event.fatal, event.reason = True, line
            return
        print(line, file=sys.stderr, flush=True)

    def describe(self) -> dict[str, Any]:
        """Executor, address, nodes with their worker counts (last placement of each worker
        still running), every placement of each worker (restarts may move it), the nodes found
        lost and the workers left out for want of room after that."""
        last = [p[-1] if p and w not in self._left_out else None for w, p in enumerate(self._placements)]
        nodes = sorted({n for n in last if n})
        return {"name": "ray", "address": self.address or "local", "cpus_per_worker": self.cpus,
                "gpus_per_worker": self.gpus,
                "nodes": [{"node": n, "workers": last.count(n)} for n in nodes],
                "worker_nodes": last, "placements": self._placements, "lost_nodes": sorted(self._lost),
                "left_out_workers": sorted(self._left_out),
                "min_workers": self.min_workers, "max_workers": self.num_workers, "worker_changes": self._changes,
                "shipped": {**self._shipment.describe(), "fetched": self._fetched}}
