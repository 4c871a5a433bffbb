"""The simulator's driver cost: from driver_busy_s when the report has it, and faster workers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parainfer.errors import UsageError
from parainfer.batch.report import REQUIRED_KEYS
from parainfer.simulate.records import Workload, simulate


def _report(tmp_path: Path, **fields: float) -> Path:
    timeline = [[i, i % 2, 0.0, 0.01 + 0.0001 * (50 + i % 7), 16, 300, 50 + i % 7] for i in range(40)]
    p = tmp_path / "r.json"
    report = {key: 0 for key in REQUIRED_KEYS}  # a run report's keys; the simulator reads those below
    report.update(timeline=timeline, t_create_s=4.0, t_schedule_s=1.0, t_write_s=0.0, **fields)
    p.write_text(json.dumps(report))
    return p


def test_driver_cost_comes_from_driver_busy_s_when_present(tmp_path: Path) -> None:
    assert Workload.from_report(_report(tmp_path)).driver_s == pytest.approx(5.0 / 40)
    assert Workload.from_report(_report(tmp_path, driver_busy_s=0.4)).driver_s == pytest.approx(0.01)


def test_faster_workers_meet_the_same_driver_sooner() -> None:
    cpu = Workload([(16, 200)] * 2000, 0.002, 1e-4, 1e-4)
    gpu = cpu.faster(50)
    assert gpu.task_seconds(200) == pytest.approx(cpu.task_seconds(200) / 50) and gpu.driver_s == cpu.driver_s
    at_64 = [simulate(w, 64)["efficiency"] for w in (cpu, gpu)]
    assert at_64[0] > 0.9 > 0.5 > at_64[1]  # the driver (0.1 ms a task) caps the 50x faster workers first
    with pytest.raises(UsageError, match="speed-up"):
        cpu.faster(0)
