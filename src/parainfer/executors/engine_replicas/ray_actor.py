"""A generation engine replica as a Ray core actor (``serve --task generate --executor ray``).

The actor's body is an :class:`~parainfer.executors.engine_replicas.host.EngineHost`. Its methods run
in three concurrency groups so that none waits for another: ``load`` (the default group),
``add``/``abort`` (group "io", one thread: they run in the order the server sent them) and
``drain`` (group "poll", one thread: the server's reader long-polls it for message batches).
Created by ``ray.RayReplicas`` with ``max_restarts=0``: the server notices a death
(the pending ``drain`` fails with ``RayActorError``) and starts a fresh actor itself.
"""

from __future__ import annotations

import time
from typing import Any

import ray

from parainfer.executors.engine_replicas.handles import EngineMessage
from parainfer.executors.engine_replicas.host import EngineHost, EngineSpec, load_failure
from parainfer.executors.worker_env import prepare_worker_env


class ReplicaLoadError(RuntimeError):
    """The engine raised while loading; the message holds the cause and a short traceback."""


class RayReplicaActor:
    """Actor body (wrapped with ``ray.remote`` by ``actor_class``).

    Args:
        worker_id: the replica's index (0..N-1).
        threads: torch intra-op threads, or None for the library default.
        env: environment variables for the engine (the server's PARAINFER_*, HF_*...).
    """

    def __init__(self, worker_id: int, threads: int | None, env: dict[str, str]) -> None:
        prepare_worker_env(worker_id, threads, env)
        self.host: EngineHost | None = None

    def load(self, spec: EngineSpec) -> dict[str, Any]:
        """Build the engine; returns its ``engine_info`` plus ``load_s`` and ``node`` (IP address).

        Raises:
            ReplicaLoadError: the model failed to load (restarting will not help).
        """
        t0 = time.perf_counter()
        try:
            self.host = EngineHost(spec.build())
        except BaseException as exc:  # noqa: BLE001 - reported to the server
            raise ReplicaLoadError(load_failure(exc)) from None
        return {**self.host.info(), "load_s": time.perf_counter() - t0, "node": ray.util.get_node_ip_address()}

    @ray.method(concurrency_group="io")
    def add(self, request_id: str, prompt: list[int], params: Any) -> None:
        assert self.host is not None, "load() first"
        self.host.add(request_id, prompt, params)

    @ray.method(concurrency_group="io")
    def abort(self, request_id: str) -> None:
        if self.host is not None:
            self.host.abort(request_id)

    @ray.method(concurrency_group="poll")
    def drain(self, timeout: float) -> list[EngineMessage]:
        """Message batches since the last call (waits up to ``timeout`` s for the first)."""
        if self.host is None:
            time.sleep(timeout)
            return []
        return self.host.drain(timeout)


def actor_class() -> Any:
    """``RayReplicaActor`` as a Ray actor class with its concurrency groups."""
    return ray.remote(concurrency_groups={"io": 1, "poll": 1})(RayReplicaActor)
