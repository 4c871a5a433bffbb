"""The simulator's sharded mode against real sharded runs: costs fitted from a real 1-worker
sharded run of a model with known cost (``parainfer.testing:sleepy``); the simulated T_N for 1
and 2 workers must be within 15% of the real runs' parallel time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parainfer.simulate.records import Workload
from parainfer.simulate.shards import sharded_rows, simulate_sharded
from tests.conftest import sleepy_reports


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    return sleepy_reports(tmp_path_factory.mktemp("simsh"), {"PARAINFER_TEST_MS_PER_TOKEN": "0.1",
                                                            "PARAINFER_MIN_SHARD_BYTES": "8000"}, shard_mode="on",
                          bucket_window=128)  # shards hold whole windows: small ones, for many shards


@pytest.mark.parametrize("workers", [1, 2])
def test_sharded_simulation_predicts_real_runs_within_15_percent(measured: dict[int, Path], workers: int) -> None:
    report = json.loads(measured[workers].read_text())
    assert report["data_path"] == "sharded" and report["shards"]["run"] > 3
    split = report["driver_shard_us"]  # the driver's CPU per shard, handing out and taking back
    assert split["dispatch"] > 0 and split["complete"] > 0 and report["shards"]["smallest_target"] >= 8000
    workload = Workload.from_report(measured[1])
    predicted = sharded_rows(str(measured[1]), workload, [workers], None, 0.0, 1.0, 0)[0]["t_n_s"]
    real = report["t_parallel_s"]
    assert abs(predicted - real) / real < 0.15, (predicted, real)


def test_a_per_shard_driver_cost_bends_the_curve_only_at_scale() -> None:
    workload = Workload([(64, 64 * 20)] * 10, overhead_s=0.0, s_per_token=1e-4, driver_s=0.0)
    cheap = simulate_sharded(workload, 256, 10_000_000, shard_driver_s=1e-4)
    dear = simulate_sharded(workload, 256, 10_000_000, shard_driver_s=0.5)
    assert cheap["efficiency"] > 0.9 > dear["efficiency"]
    assert simulate_sharded(workload, 1, 100_000)["efficiency"] > 0.99


def test_a_large_job_on_1024_fast_workers_keeps_the_driver_off_the_critical_path() -> None:
    # GPU-like: 35 µs a record (a 2-core CPU worker's ~1.7 ms / 50); driver 0.2 ms a shard.
    workload = Workload([(100, 100)] * 10, overhead_s=0.0, s_per_token=35e-6, driver_s=0.0)
    row = simulate_sharded(workload, 1024, 100_000_000, shard_driver_s=2e-4, shard_overhead_s=0.0, min_records=160)
    assert row["efficiency"] >= 0.9 and row["driver_busy"] < 0.5
    assert row["tasks"] < 8 * 1024 and row["smallest_shard"] >= 160
