"""Executors, created by name with :func:`make_executor` (the batch drivers and the server never import
a concrete one): ``local`` (worker processes on this machine) and ``ray`` (Ray core actors on a
cluster). Both implement :class:`parainfer.executors.base.Executor`.
"""

from __future__ import annotations

from typing import Any

from parainfer.errors import UsageError
from parainfer.executors.base import Executor
from parainfer.executors.local import MAX_DEATHS_WHILE_LOADING, default_threads

EXECUTORS = ("local", "ray")
RAY_MISSING = "--executor ray needs Ray, which is not installed: pip install 'parainfer[ray]'"


def check_executor(name: str) -> None:
    """Validate ``--executor`` before any model is built.

    Raises:
        UsageError: ``name`` is not one of :data:`EXECUTORS`, or it is ``ray`` and the ``ray``
            package cannot be imported (the message says how to install it).
    """
    if name not in EXECUTORS:
        raise UsageError(f"unknown executor {name!r}; accepted: {', '.join(EXECUTORS)}")
    if name == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UsageError(RAY_MISSING) from None


def make_executor(name: str, predictor: Any, num_workers: int, threads_per_worker: int | None = None,
                  env: dict[str, str] | None = None, address: str | None = None, cpus_per_worker: float = 1.0,
                  gpus_per_worker: float = 0.0, min_workers: int | None = None) -> Executor:
    """Create the executor called ``name`` (not started) for ``num_workers`` replicas of ``predictor``.

    Args:
        name: "local" or "ray".
        predictor: an unloaded Predictor (pickled to each worker).
        num_workers: N >= 1 workers.
        threads_per_worker: intra-op threads per worker (default: usable cores // N; on Ray,
            cpus_per_worker rounded up when given as more than 1).
        env: extra environment variables for the workers.
        address, cpus_per_worker, gpus_per_worker, min_workers: Ray only (see RayExecutor; min_workers:
            elastic, ``--workers MIN:MAX``); ignored by local, which starts all ``num_workers``.

    Raises:
        UsageError: unknown name, or ``ray`` without Ray installed.
    """
    check_executor(name)
    if name == "ray":
        from parainfer.executors.ray import RayExecutor

        return RayExecutor(predictor, num_workers, threads_per_worker, env, address=address,
                           cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker, min_workers=min_workers)
    from parainfer.executors.local import LocalExecutor

    return LocalExecutor(predictor, num_workers, threads_per_worker, env)


__all__ = ["EXECUTORS", "MAX_DEATHS_WHILE_LOADING", "Executor", "check_executor", "default_threads", "make_executor"]
