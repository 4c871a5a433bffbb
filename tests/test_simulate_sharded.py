"""The simulator's sharded mode against real sharded runs: costs fitted from a real 1-worker
sharded run of a model with known cost (``parainfer.testing:sleepy``); the simulated T_N for 1
and 2 workers must be within 15% of the real runs' parallel time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parainfer.config import JobConfig
from parainfer.engine import Job
from parainfer.models.python_callable import CallablePredictor
from parainfer.simulate import Workload
from parainfer.simulate_sharded import sharded_rows, simulate_sharded


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    tmp = tmp_path_factory.mktemp("simsh")
    src = tmp / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": "tok " * (3 + (i * 7) % 40)}) + "\n" for i in range(1500)))
    mp = pytest.MonkeyPatch()
    mp.setenv("PARAINFER_TEST_MS_PER_TOKEN", "0.1")
    mp.setenv("PARAINFER_MIN_SHARD_BYTES", "8000")
    reports = {}
    try:
        for n in (1, 2):
            reports[n] = tmp / f"r{n}.json"
            Job(JobConfig(input=str(src), output=str(tmp / f"o{n}.jsonl"), workers=n, batch_size=32,
                          report=str(reports[n]), quiet=True, shard_mode="on"),
                CallablePredictor("parainfer.testing:sleepy")).run()
    finally:
        mp.undo()
    return reports


@pytest.mark.parametrize("workers", [1, 2])
def test_sharded_simulation_predicts_real_runs_within_15_percent(measured: dict[int, Path], workers: int) -> None:
    report = json.loads(measured[workers].read_text())
    assert report["data_path"] == "sharded" and report["shards"]["run"] > 3
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
