"""Scheduling policies, one per module, created by name with :func:`make_policy`."""

from __future__ import annotations

from parainfer.errors import UsageError
from parainfer.scheduling.base import SchedulingPolicy


def _registry() -> dict[str, type[SchedulingPolicy]]:
    from parainfer.scheduling.dynamic import DynamicPolicy
    from parainfer.scheduling.static import StaticPolicy

    return {p.name: p for p in (StaticPolicy, DynamicPolicy)}


def policy_names() -> list[str]:
    """Names accepted by ``--policy``."""
    return list(_registry())


def make_policy(name: str, num_workers: int) -> SchedulingPolicy:
    """Create the policy called ``name`` for ``num_workers`` workers.

    Raises UsageError naming the accepted policies when ``name`` is unknown.
    """
    registry = _registry()
    if name not in registry:
        raise UsageError(f"unknown scheduling policy {name!r}; accepted: {', '.join(registry)}")
    return registry[name](num_workers)


__all__ = ["SchedulingPolicy", "make_policy", "policy_names"]
