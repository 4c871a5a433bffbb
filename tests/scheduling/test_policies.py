"""Scheduling policies: placement rules and the factory."""

from __future__ import annotations

import pytest

from parainfer.errors import UsageError
from parainfer.scheduling import make_policy, policy_names
from parainfer.executors.base import Task


def make_tasks(n: int) -> list[Task]:
    return [Task(index=i, seqs=[i], texts=["t"], tokens=1, padded_tokens=1) for i in range(n)]


def test_factory_rejects_unknown_names() -> None:
    with pytest.raises(UsageError, match="accepted: .*dynamic"):
        make_policy("fastest", 2)
    assert {"static", "dynamic"} <= set(policy_names())


def test_static_deals_round_robin_and_never_rebalances() -> None:
    policy = make_policy("static", 3)
    policy.add_tasks(make_tasks(7))
    got_w0 = [t.index for t in iter(lambda: policy.next_task(0), None)]
    assert got_w0 == [0, 3, 6]
    assert policy.next_task(0) is None and policy.pending() == 4


def test_dynamic_hands_the_oldest_task_to_whoever_asks() -> None:
    policy = make_policy("dynamic", 2)
    policy.add_tasks(make_tasks(4))
    assert [policy.next_task(w).index for w in (1, 1, 0)] == [0, 1, 2]
    retried = make_tasks(1)[0]
    policy.requeue(retried)
    assert policy.next_task(0) is retried
