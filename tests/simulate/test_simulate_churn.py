"""The churn model of ``parainfer simulate``: nodes join, are lost and preempted while the job
runs; every task still completes once (the driver's own recovery gives a lost worker's tasks out
again), losses throw compute away, preemptions with enough notice do not."""

from __future__ import annotations

import pytest

from parainfer.errors import UsageError
from parainfer.simulate.churn import Churn, simulate_churn
from parainfer.simulate.records import Workload, simulate

# 4,000 tasks of ~0.3 s: a 20-minute job on 1 worker, 5 minutes on 4
WORK = Workload([(16, 2000 + 40 * (i % 11)) for i in range(4000)], 0.01, 1.4e-4, 1e-4)


def test_without_churn_it_is_the_plain_simulation() -> None:
    plain, churned = simulate(WORK, 4), simulate_churn(WORK, 4, Churn())
    assert churned["t_n_s"] == pytest.approx(plain["t_n_s"], rel=1e-6) and churned["done"]
    assert churned["efficiency"] == pytest.approx(plain["efficiency"], rel=1e-6) and churned["redone_s"] == 0


def test_losses_redo_work_and_joins_replace_the_lost_workers() -> None:
    lossy = simulate_churn(WORK, 4, Churn(losses=30), seed=1)
    assert lossy["done"] and lossy["losses"] > 0 and lossy["redone_s"] > 0
    assert lossy["t_n_s"] > simulate(WORK, 4)["t_n_s"]  # fewer workers, and work redone
    grown = simulate_churn(WORK, 4, Churn(losses=30, joins=60, load_s=10), seed=1)
    assert grown["joins"] > 0 and grown["t_n_s"] < lossy["t_n_s"]


def test_preemptions_with_enough_notice_redo_nothing_and_short_notice_does() -> None:
    calm = simulate_churn(WORK, 4, Churn(preemptions=30, notice_s=60), seed=2)
    assert calm["preemptions"] > 0 and calm["killed_at_deadline"] == 0 and calm["redone_s"] == 0 and calm["done"]
    abrupt = simulate_churn(WORK, 4, Churn(preemptions=30, notice_s=0.05), seed=2)
    assert abrupt["killed_at_deadline"] > 0 and abrupt["redone_s"] > 0 and abrupt["done"]


def test_churn_option_is_parsed_and_checked() -> None:
    assert Churn.parse("joins=2, losses=1,preemptions=4,notice=30,max=8") == Churn(2, 1, 4, 30.0, 10.0, 8)
    with pytest.raises(UsageError, match="keys joins, losses, preemptions, notice, load, max"):
        Churn.parse("leaves=3")
    with pytest.raises(UsageError, match="got 'losses=-1'"):
        Churn.parse("losses=-1")
