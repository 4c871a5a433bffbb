"""Generation engine replicas as Ray core actors (``ray_actor.RayReplicaActor``), one engine each,
spread over the cluster's nodes round robin.

The handle's reader thread calls the actor's ``load``, then long-polls its ``drain`` for message
batches; a failed call means the actor is gone (``max_restarts=0``: the server starts a fresh one).
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
from typing import Any

from parainfer.executors.engine_replicas.handles import (
    OnEvent,
    ReplicaExited,
    ReplicaFailed,
    ReplicaOutput,
    ReplicaReady,
)
from parainfer.executors.engine_replicas.host import EngineSpec
from parainfer.executors.local import default_threads


class RayReplicas:
    """A ``handles.ReplicaLauncher`` of Ray core actors.

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
        self._handles: dict[int, RayReplicaHandle] = {}  # the latest actor of each replica

    def connect(self) -> None:
        """Connect to the cluster (or start a local Ray); blocking.

        Raises:
            UsageError: the cluster has too few CPUs/GPUs for the actors.
        """
        from parainfer.executors.engine_replicas.ray_actor import actor_class
        from parainfer.executors.ray_cluster import check_room, connect

        self._owns_ray = connect(self.address, math.ceil(self.workers * self.cpus))
        check_room(self.address, self.workers, self.cpus, self.gpus)
        self._actor_class = actor_class()

    def start(self, w: int, on_event: OnEvent) -> RayReplicaHandle:
        """Create replica ``w``'s actor, on a node of its own where one has room (see
        ``handles.ReplicaLauncher.start``)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from parainfer.executors.ray_cluster import pick_node

        taken = [h.node for v, h in self._handles.items() if v != w and h.node]
        node = pick_node(w, w not in self._handles, self.cpus, self.gpus, taken)
        strategy = NodeAffinitySchedulingStrategy(node, soft=True) if node else "SPREAD"
        actor = self._actor_class.options(  # type: ignore[union-attr]
            num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=0, max_task_retries=0,
            scheduling_strategy=strategy, runtime_env={"env_vars": self.env},
        ).remote(w, self.spec.threads, self.env)
        self._handles[w] = RayReplicaHandle(actor, w, self.spec, on_event)
        return self._handles[w]

    def close(self) -> None:
        """Shut down the Ray this launcher started (a cluster it connected to stays up)."""
        import ray

        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
            self._owns_ray = False


class RayReplicaHandle:
    """A ``handles.ReplicaHandle`` of one Ray actor (created by ``RayReplicas``)."""

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
                self.on_event(ReplicaFailed(load_error(exc)))
            return None
        self.node = info.get("node")
        if not self.closed:
            self.on_event(ReplicaReady(info))
        while not self.closed:
            try:
                messages = ray.get(self.actor.drain.remote(self.POLL_S))
            except Exception as exc:  # noqa: BLE001 - RayActorError: it died
                return self._died(exc)
            if messages and not self.closed:
                self.on_event(ReplicaOutput(messages))
        return None

    def _died(self, exc: BaseException) -> None:
        if not self.closed:
            cause = " ".join(str(exc).split())[:300]
            self.on_event(ReplicaExited(f"replica {self.w} died: {type(exc).__name__}: {cause}"))
