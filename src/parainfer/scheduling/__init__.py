"""Scheduling policies, one per module, created by name with :func:`make_policy`."""

from __future__ import annotations

from parainfer.errors import UsageError
from parainfer.scheduling.base import SchedulingPolicy
from parainfer.scheduling.cost import CostModel


def _registry() -> dict[str, type[SchedulingPolicy]]:
    from parainfer.scheduling.dynamic import DynamicPolicy
    from parainfer.scheduling.lpt import LptPolicy
    from parainfer.scheduling.static import StaticPolicy
    from parainfer.scheduling.steal import StealPolicy

    return {p.name: p for p in (StaticPolicy, DynamicPolicy, LptPolicy, StealPolicy)}


def policy_names() -> list[str]:
    """Names accepted by ``--policy``."""
    return list(_registry())


def make_policy(name: str, num_workers: int, cost: CostModel | None = None) -> SchedulingPolicy:
    """Create the policy called ``name`` for ``num_workers`` workers.

    Raises UsageError naming the accepted policies when ``name`` is unknown.
    """
    registry = _registry()
    if name not in registry:
        raise UsageError(f"unknown scheduling policy {name!r}; accepted: {', '.join(registry)}")
    return registry[name](num_workers, cost=cost)


__all__ = ["SchedulingPolicy", "make_policy", "policy_names"]
