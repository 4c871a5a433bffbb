"""Generation replicas as local processes or Ray actors, behind one small handle contract.

``make_replicas(config, spec)`` returns the factory the ``--executor`` names. Its
``start(w, on_event)`` starts worker ``w`` (one engine, ``replica_worker.EngineHost``) and
returns a handle with ``add(request_id, prompt_ids, params)``, ``abort(request_id)`` and
``close()``. A reader thread per handle reports, by ``on_event(kind, payload)`` (called in that
thread):

* ``("ready", info)``: the engine loaded (``replica_worker.engine_info`` + ``load_s``, ``node``);
* ``("fatal", reason)``: the model failed to load (restarting will not help);
* ``("batch", messages)``: the engine's messages (``replica_worker`` module docstring);
* ``("died", reason)``: the process or actor is gone (killed, crashed, its node lost).

Nothing is reported after ``close()``.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing as mp
import os
import threading
from typing import Any, Callable

from parainfer.executors import default_threads
from parainfer.executors.engine_replicas.host import EngineSpec, replica_process_main
from parainfer.executors.worker_env import die_with_parent_env

OnEvent = Callable[[str, Any], None]


def make_replicas(config: Any, spec: EngineSpec) -> LocalReplicas | RayReplicas:
    """The replica factory for ``config.executor`` ("local" or "ray"), ``config.workers`` of them."""
    if config.executor == "ray":
        return RayReplicas(spec, config.workers, config.address, config.cpus_per_worker, config.gpus_per_worker)
    return LocalReplicas(spec, config.workers)


class LocalReplicas:
    """Worker processes on this machine (spawned), one engine each.

    Args:
        spec: the engine to build (``threads`` None: usable cores // workers).
        workers: how many replicas the server runs (for the thread default).
    """

    name = "local"

    def __init__(self, spec: EngineSpec, workers: int) -> None:
        threads = spec.threads or default_threads(workers)
        self.spec = dataclasses.replace(spec, threads=threads)
        self._ctx = mp.get_context("spawn")

    def connect(self) -> None:
        """Nothing to connect to."""

    def start(self, w: int, on_event: OnEvent) -> _LocalReplica:
        return _LocalReplica(self._ctx, w, self.spec, on_event)

    def close(self) -> None:
        """Nothing to release (each handle's ``close`` stops its process)."""


class _LocalReplica:
    def __init__(self, ctx: Any, w: int, spec: EngineSpec, on_event: OnEvent) -> None:
        self.w, self.on_event, self.closed = w, on_event, False
        commands_in, self._commands = ctx.Pipe(duplex=False)
        self._events, events_out = ctx.Pipe(duplex=False)
        env = die_with_parent_env()
        self.proc = ctx.Process(target=replica_process_main, args=(w, spec, commands_in, events_out, env),
                                name=f"parainfer-replica-{w}", daemon=True)
        self.proc.start()
        commands_in.close()
        events_out.close()  # the worker holds the only write end: EOF means it died
        self._lock = threading.Lock()
        threading.Thread(target=self._read, name=f"parainfer-replica-{w}-reader", daemon=True).start()

    def add(self, request_id: str, prompt: list[int], params: Any) -> None:
        """Raises OSError when the worker is gone (its ``died`` event follows)."""
        with self._lock:
            self._commands.send(("add", request_id, prompt, params))

    def abort(self, request_id: str) -> None:
        try:
            with self._lock:
                self._commands.send(("abort", request_id))
        except (OSError, ValueError):  # gone already: nothing left to abort
            pass

    def close(self) -> None:
        self.closed = True
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)
        for conn in (self._commands, self._events):
            conn.close()

    def _read(self) -> None:
        try:
            while True:
                msg = self._events.recv()
                if isinstance(msg, list):
                    self.on_event("batch", msg)
                elif not self.closed:
                    self.on_event(msg[0], msg[1])
        except Exception:  # noqa: BLE001 - EOF (it died), a closed pipe, a message cut short
            pass
        if self.closed:
            return
        self.proc.join(timeout=5)
        self.on_event("died", f"replica {self.w} (pid {self.proc.pid}) exited with code {self.proc.exitcode}")


class RayReplicas:
    """Ray core actors, one engine each, spread over the cluster's nodes round robin.

    Args:
        spec: the engine to build (``threads`` None: ``cpus_per_worker`` rounded up on a
            cluster, usable cores // workers for a Ray started for the server).
        workers: how many replicas the server runs.
        address: the cluster ("HOST:PORT"); None: RAY_ADDRESS, else a local Ray started here.
        cpus_per_worker, gpus_per_worker: Ray resources each actor asks for.
    """

    name = "ray"

    def __init__(self, spec: EngineSpec, workers: int, address: str | None, cpus_per_worker: float,
                 gpus_per_worker: float) -> None:
        from parainfer.executors.ray_cluster import PASSED_ENV_PREFIXES

        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.workers, self.cpus, self.gpus = workers, cpus_per_worker, gpus_per_worker
        threads = spec.threads or (math.ceil(cpus_per_worker) if self.address else default_threads(workers))
        self.spec = dataclasses.replace(spec, threads=threads)
        self.env = {k: v for k, v in os.environ.items() if k.startswith(PASSED_ENV_PREFIXES)}
        self._owns_ray, self._actor_class = False, None
        self._handles: dict[int, _RayReplica] = {}  # the latest actor of each replica

    def connect(self) -> None:
        """Connect to the cluster (or start a local Ray); blocking.

        Raises:
            UsageError: the cluster has too few CPUs/GPUs for the actors.
        """
        from parainfer.executors.ray_cluster import check_room, connect
        from parainfer.executors.engine_replicas.ray import actor_class

        self._owns_ray = connect(self.address, math.ceil(self.workers * self.cpus))
        check_room(self.address, self.workers, self.cpus, self.gpus)
        self._actor_class = actor_class()

    def start(self, w: int, on_event: OnEvent) -> _RayReplica:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from parainfer.executors.ray_cluster import pick_node

        taken = [h.node for v, h in self._handles.items() if v != w and h.node]
        node = pick_node(w, w not in self._handles, self.cpus, self.gpus, taken)
        strategy = NodeAffinitySchedulingStrategy(node, soft=True) if node else "SPREAD"
        actor = self._actor_class.options(  # type: ignore[union-attr]
            num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=0, max_task_retries=0,
            scheduling_strategy=strategy, runtime_env={"env_vars": self.env},
        ).remote(w, self.spec.threads, self.env)
        self._handles[w] = _RayReplica(actor, w, self.spec, on_event)
        return self._handles[w]

    def close(self) -> None:
        import ray

        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
            self._owns_ray = False


class _RayReplica:
    POLL_S = 0.5

    def __init__(self, actor: Any, w: int, spec: EngineSpec, on_event: OnEvent) -> None:
        self.actor, self.w, self.spec, self.on_event, self.closed = actor, w, spec, on_event, False
        self.node: str | None = None  # its node's address, once loaded
        threading.Thread(target=self._read, name=f"parainfer-replica-{w}-reader", daemon=True).start()

    def add(self, request_id: str, prompt: list[int], params: Any) -> None:
        self.actor.add.remote(request_id, prompt, params)

    def abort(self, request_id: str) -> None:
        try:
            self.actor.abort.remote(request_id)
        except Exception:  # noqa: BLE001 - gone already
            pass

    def close(self) -> None:
        import ray

        self.closed = True
        try:
            ray.kill(self.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone, or its node is
            pass

    def _read(self) -> None:
        import ray

        from parainfer.executors.ray_cluster import load_error

        try:
            info = ray.get(self.actor.load.remote(self.spec))
        except ray.exceptions.RayActorError as exc:
            return self._died(exc)
        except Exception as exc:  # noqa: BLE001 - ReplicaLoadError, wrapped by Ray
            if not self.closed:
                self.on_event("fatal", load_error(exc))
            return None
        self.node = info.get("node")
        if not self.closed:
            self.on_event("ready", info)
        while not self.closed:
            try:
                messages = ray.get(self.actor.drain.remote(self.POLL_S))
            except Exception as exc:  # noqa: BLE001 - RayActorError: it died
                return self._died(exc)
            if messages and not self.closed:
                self.on_event("batch", messages)
        return None

    def _died(self, exc: BaseException) -> None:
        if not self.closed:
            cause = " ".join(str(exc).split())[:300]
            self.on_event("died", f"replica {self.w} died: {type(exc).__name__}: {cause}")
