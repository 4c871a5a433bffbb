"""The autoscaling policy alone (``serving.autoscale.AutoscalePolicy``): Ray Serve's ceil(ongoing /
target) clipped to [min, max], averaged over the look-back window, changed only after a decision
held for its delay."""

from __future__ import annotations

import pytest

from parainfer.serving.autoscale import AutoscalePolicy


def run(policy: AutoscalePolicy, samples: list[tuple[float, float]], current: int) -> list[int]:
    """Feed (time, ongoing) samples; the count follows the decisions, as the autoscaler's does."""
    counts = []
    for now, ongoing in samples:
        current = policy.decide(now, ongoing, current)
        counts.append(current)
    return counts


def test_desired_is_ceil_of_average_work_over_target_clipped_to_the_range():
    policy = AutoscalePolicy(min_replicas=1, max_replicas=4, target_ongoing=2.0, upscale_delay_s=0,
                             look_back_s=1.0)
    assert policy.decide(0.0, 5, 1) == 3  # ceil(5 / 2)
    assert policy.decide(0.5, 100, 3) == 4  # mean(5, 100) / 2 = 26.25: clipped to max
    assert policy.decide(10.0, 0, 4) == 4  # down waits for its delay (600 s by default)
    assert policy.desired(10.0) == 1  # the old samples left the window; clipped to min


def test_upscale_waits_its_delay_and_a_break_restarts_the_wait():
    policy = AutoscalePolicy(min_replicas=1, max_replicas=3, target_ongoing=2.0, upscale_delay_s=1.0,
                             downscale_delay_s=5.0, look_back_s=0.05)
    counts = run(policy, [(t / 10, 8) for t in range(10)], current=1)
    assert counts == [1] * 10  # wanted for 0.9 s: not yet
    assert policy.decide(1.0, 8, 1) == 3  # held 1 s: up to ceil(8 / 2) clipped to 3
    # a quiet moment in between resets the upscale wait
    counts = run(policy, [(2.0, 8), (2.6, 0), (2.7, 8), (3.5, 8), (3.8, 8)], current=1)
    assert counts == [1, 1, 1, 1, 3]


def test_downscale_needs_the_quiet_to_last_its_delay():
    policy = AutoscalePolicy(min_replicas=1, max_replicas=2, target_ongoing=2.0, upscale_delay_s=0,
                             downscale_delay_s=2.0, look_back_s=0.5)
    counts = run(policy, [(t / 10, 0) for t in range(0, 25)], current=2)
    assert counts[:20] == [2] * 20 and counts[-1] == 1
    assert run(policy, [(3.0, 0)], current=1) == [1]  # never below min


@pytest.mark.parametrize("bad", [dict(min_replicas=0, max_replicas=2), dict(min_replicas=3, max_replicas=2),
                                 dict(min_replicas=1, max_replicas=2, target_ongoing=0),
                                 dict(min_replicas=1, max_replicas=2, upscale_delay_s=-1)])
def test_bad_settings_are_refused_by_name(bad):
    with pytest.raises(ValueError, match="min_replicas|target_ongoing|delays"):
        AutoscalePolicy(**bad)
