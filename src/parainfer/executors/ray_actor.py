"""The worker side of the Ray executor: one Ray core actor holds one model replica.

``RayWorker`` does what a local worker process does (``executors/worker.py``): load the
predictor once, then run tasks (``run_task``) and, in sharded mode, whole shards. It runs one
call at a time in submission order (each call carries a turn number); ``watch`` never returns,
so the driver sees the actor's death at once; ``mark_running`` records the task it starts in
Ray's key-value store. Times are this process's ``perf_counter``. Turns, clocks and deaths:
docs/cluster.md, "How the executor uses Ray" ("The actor") and "What survives which fault".
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from typing import Any

import ray

from parainfer.executors.base import ShardTask
from parainfer.executors.worker import run_task
from parainfer.executors.worker_env import pin_torch_threads, place_predictor, prepare_worker_env
from parainfer.models.base import Predictor
from parainfer.executors.base import Task


RUNNING_KV_NAMESPACE = "parainfer-running"


def running_key(actor_id_hex: str) -> bytes:
    """Key under which an actor records the index of the task it is starting."""
    return actor_id_hex.encode()


def mark_running(task_index: int) -> None:
    """Record, synchronously in Ray's internal key-value store (GCS), that this actor starts task
    ``task_index``. A task's result can be lost when its process dies right after returning (the
    reply still in its send buffer), so the driver cannot tell a finished task from the running
    one by its results alone; this record survives the process (one small GCS write per task)."""
    from ray.experimental import internal_kv

    key = running_key(ray.get_runtime_context().get_actor_id())
    internal_kv._internal_kv_put(key, str(task_index).encode(), overwrite=True, namespace=RUNNING_KV_NAMESPACE)


class ModelLoadError(RuntimeError):
    """The predictor raised while loading; the message holds the cause and a short traceback."""


class RayWorker:
    """Actor body (wrapped with ``ray.remote`` by the executor).

    Args:
        worker_id: the worker's index (0..N-1), exported as PARAINFER_WORKER_ID.
        threads: intra-op threads (OMP/MKL and torch), or None for the library default.
    """

    def __init__(self, worker_id: int, threads: int | None):
        self.worker_id, self.threads = worker_id, threads
        self.predictor: Predictor | None = None
        self._turn = 0
        self._cond = threading.Condition()
        self._checked: set[Any] = set()  # ray_shards.PathCheck verified on this node
        prepare_worker_env(worker_id, threads)  # the driver's variables come as Ray's runtime env

    def _wait_turn(self, turn: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._turn == turn)

    def _next_turn(self) -> None:
        with self._cond:
            self._turn += 1
            self._cond.notify_all()

    def load(self, predictor: Predictor, shipped: list[Any] = ()) -> dict[str, Any]:
        """Load the replica (turn 0); returns {"load_s", "info" (predictor.describe()), "node", "pid",
        "fetched"}. ``shipped``: the ``ray_ship.ShippedPath``s the model reads; those this node
        lacks are fetched first (``ray_ship.receive``; "fetched" lists them).

        Raises:
            ModelLoadError: the predictor raised (restarting will not help).
            ray_ship.ShipError: this node lacks a path too large to ship.
        """
        self._wait_turn(0)
        try:
            return self._load(predictor, list(shipped))
        finally:
            self._next_turn()

    def _load(self, predictor: Predictor, shipped: list[Any]) -> dict[str, Any]:
        from parainfer.executors.ray_ship import receive

        t0 = time.perf_counter()
        fetched = receive(predictor, shipped, ray.util.get_node_ip_address()) if shipped else []
        place_predictor(predictor, self.worker_id, self.threads)
        try:
            predictor.load()
            pin_torch_threads(self.threads)
        except BaseException as e:  # noqa: BLE001 - report any load failure to the driver
            raise ModelLoadError(f"model failed to load: {type(e).__name__}: {e}\n"
                                 f"{traceback.format_exc(limit=3)}") from None
        self.predictor = predictor
        load_s = time.perf_counter() - t0
        phases = dict(getattr(predictor, "load_phases", {}))  # no started_at: another node's clock
        phases["load_other_s"] = max(0.0, load_s - sum(phases.values()))
        return {"load_s": load_s, "info": predictor.describe(), "phases": phases,
                "node": ray.util.get_node_ip_address(), "pid": os.getpid(), "fetched": fetched}

    def run(self, task: Task | ShardTask, turn: int, check: Any = None) -> Any:
        """Run one task when its ``turn`` (1, 2, ...) comes; returns (task index, outputs, errors,
        queue_s, compute_s, counts, encoded, unwritable, renamed), both durations measured here
        (queue_s: waiting for the turn); counts: the task's exact ``TokenCounts``; the last three
        as ``TaskResult``'s (a task with ``rows``: output lines encoded here).

        A ``ShardTask`` (sharded mode) runs with its ``runner`` (``batch.shard_runner.run_shard``) and returns
        its ``ShardResult`` (times on this process's clock: the executor keeps only durations).
        Before this actor's first shard of a (input, parts folder) pair, ``check``
        (``ray_shards.PathCheck``) is verified: ``ray_shards.SharedPathError`` when this node does
        not see the driver's input file or parts folder."""
        t_received = time.perf_counter()
        self._wait_turn(turn)
        try:
            assert self.predictor is not None, "load() first"
            if isinstance(task, ShardTask):
                return self._run_shard(task, check, t_received)
            mark_running(task.index)
            res = run_task(self.predictor, task, self.worker_id, t_received)
        finally:
            self._next_turn()
        return (res.task_index, res.outputs, res.errors, res.t_start - res.t_received, res.t_end - res.t_start,
                res.counts, res.encoded, res.unwritable, res.renamed)

    def _run_shard(self, task: ShardTask, check: Any, t_received: float) -> Any:
        from parainfer.executors.ray_shards import check_paths

        if check is not None and check not in self._checked:
            check_paths(check, ray.util.get_node_ip_address())
            self._checked.add(check)
        mark_running(task.index)
        return task.runner(self.predictor, task, self.worker_id, t_received, run_task)

    @ray.method(concurrency_group="watch")
    def watch(self) -> None:
        """Never returns (its pending call fails when the actor dies: a death notice)."""
        while True:
            time.sleep(3600)
