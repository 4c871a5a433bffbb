"""Generation engines as replicas: a worker process or Ray actor that hosts one LLMEngine, behind a
typed handle (``handles``: the contract and its events); ``make_replicas`` picks the launcher by name.
"""

from __future__ import annotations

from typing import Any

from parainfer.executors.engine_replicas.handles import ReplicaLauncher


def make_replicas(config: Any, spec: Any) -> ReplicaLauncher:
    """The replica launcher for ``config.executor``: "ray" (``ray.RayReplicas``, with ``config``'s
    ``address``, ``cpus_per_worker``, ``gpus_per_worker``), else "local" (``local.LocalReplicas``),
    for ``config.workers`` replicas of ``spec`` (a ``host.EngineSpec``). Not connected yet."""
    if config.executor == "ray":
        from parainfer.executors.engine_replicas.ray import RayReplicas

        return RayReplicas(spec, config.workers, config.address, config.cpus_per_worker, config.gpus_per_worker)
    from parainfer.executors.engine_replicas.local import LocalReplicas

    return LocalReplicas(spec, config.workers)
