"""Cost model fits, LPT and work-stealing placement, and the batch-size tuner."""

from __future__ import annotations

import pytest

from parainfer.scheduling import make_policy
from parainfer.scheduling.autobatch import BatchSizeTuner
from parainfer.scheduling.cost import CostModel
from parainfer.executors.base import Task


def task(index: int, tokens: int) -> Task:
    return Task(index=index, seqs=[index], texts=["t"], tokens=tokens, padded_tokens=tokens)


def test_cost_model_recovers_overhead_and_per_token_cost() -> None:
    cost = CostModel(2, decay=1.0)
    for tokens in (100, 200, 400, 800):
        cost.observe(0, tokens, 0.01 + 0.001 * tokens)
        cost.observe(1, tokens, 3 * (0.01 + 0.001 * tokens))  # a 3x slower worker
    a, b = cost.coefficients(0)
    assert a == pytest.approx(0.01, rel=1e-6) and b == pytest.approx(0.001, rel=1e-6)
    assert cost.estimate(1000, 1) == pytest.approx(3 * 1.01, rel=1e-6)
    assert cost.speed(0) > 1.4 > cost.speed(1)


def test_cost_model_follows_a_worker_that_slows_down() -> None:
    cost = CostModel(1, decay=0.5)
    for _ in range(10):
        cost.observe(0, 100, 0.1)
    for _ in range(10):
        cost.observe(0, 100, 0.3)
    assert cost.estimate(100, 0) == pytest.approx(0.3, rel=0.01)


def test_lpt_hands_out_largest_first() -> None:
    policy = make_policy("lpt", 1)
    policy.add_tasks([task(i, n) for i, n in enumerate([5, 50, 20, 70, 1])])
    assert [policy.next_task(0).padded_tokens for _ in range(5)] == [70, 50, 20, 5, 1]


def test_lpt_keeps_big_tasks_off_a_slow_worker() -> None:
    cost = CostModel(2, decay=1.0)
    for tokens in (10, 20, 40):
        cost.observe(0, tokens, 0.001 * tokens)
        cost.observe(1, tokens, 0.010 * tokens)  # worker 1 is 10x slower
    policy = make_policy("lpt", 2, cost=cost)
    policy.add_tasks([task(i, n) for i, n in enumerate([100, 90, 5, 4])])
    assert policy.next_task(1).padded_tokens == 4  # the fast worker would finish 100 sooner
    assert policy.next_task(0).padded_tokens == 100
    assert policy.stats["deferred_to_faster"] == 1


def test_steal_takes_from_the_tail_of_the_most_loaded_queue() -> None:
    policy = make_policy("steal", 2)
    policy.add_tasks([task(i, 10) for i in range(6)])  # balanced: 3 each
    mine = [policy.next_task(0).index for _ in range(3)]
    stolen = policy.next_task(0)
    assert stolen is not None and stolen.index not in mine and policy.stats["steals"] == 1
    rest = [policy.next_task(1).index for _ in range(2)]
    assert sorted(mine + [stolen.index] + rest) == list(range(6))
    assert stolen.index > max(rest)  # the tail: the task its owner would reach last
    assert policy.next_task(0) is None and policy.next_task(1) is None


@pytest.mark.parametrize("name", ["static", "dynamic", "lpt", "steal"])
def test_every_task_handed_out_exactly_once(name: str) -> None:
    policy = make_policy(name, 3)
    policy.add_tasks([task(i, 1 + (i * 7) % 13) for i in range(40)])
    got = []
    while policy.pending():
        for w in range(3):
            t = policy.next_task(w)
            if t is not None:
                got.append(t.index)
                policy.on_task_done(w, t, 0.001 * t.padded_tokens)
    assert sorted(got) == list(range(40))


def test_tuner_grows_while_throughput_improves_then_settles() -> None:
    tuner = BatchSizeTuner(start=8, max_size=512, tasks_per_trial=2)
    # throughput rises up to batch 64, flat after: tokens/s = min(size, 64) * 100
    while not tuner.settled:
        size = tuner.current
        for _ in range(2):
            tuner.observe(size, tokens=size * 10, busy_s=size * 10 / (min(size, 64) * 100), now_s=1.0)
    assert tuner.current == 64
    assert [s for _, s in tuner.history] == [8, 16, 32, 64, 128, 64]
