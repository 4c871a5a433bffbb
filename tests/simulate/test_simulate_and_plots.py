"""The scale simulator against real runs, and the report plots.

Validation: fit costs from a real 1-worker run of a model with known cost
(``parainfer.testing:sleepy``), then the simulator's T_N for 1 and 2 workers must be within 15%
of real runs' parallel time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from parainfer.simulate.records import Workload, amdahl_fraction, fit_line, simulate
from tests.conftest import sleepy_reports


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    return sleepy_reports(tmp_path_factory.mktemp("sim"), {"PARAINFER_TEST_MS_PER_TOKEN": "0.1"})


@pytest.mark.parametrize("workers", [1, 2])
def test_simulator_predicts_real_runs_within_15_percent(measured: dict[int, Path], workers: int) -> None:
    workload = Workload.from_report(measured[1])
    predicted = simulate(workload, workers, "dynamic")["t_n_s"]
    real = json.loads(measured[workers].read_text())["t_parallel_s"]
    assert abs(predicted - real) / real < 0.15, (predicted, real)


def test_fit_line_and_amdahl() -> None:
    assert fit_line([1, 2, 3], [3, 5, 7]) == pytest.approx((1.0, 2.0))
    rows = [{"workers": n, "speedup": 1 / (0.1 + 0.9 / n)} for n in (1, 2, 8, 64)]
    assert amdahl_fraction(rows) == pytest.approx(0.1)


def test_simulated_straggler_hurts_static_more_than_dynamic() -> None:
    workload = Workload([(16, 100 + (i * 37) % 400) for i in range(400)], 0.001, 1e-4, 1e-5)
    static = simulate(workload, 4, "static", slowdown=3.0)
    dynamic = simulate(workload, 4, "dynamic", slowdown=3.0)
    assert static["t_n_s"] > 1.3 * dynamic["t_n_s"] and dynamic["imbalance"] < 1.1 < static["imbalance"]


def test_report_plot_png_and_html(measured: dict[int, Path], tmp_path: Path) -> None:
    for name in ("t.png", "t.html"):
        out = tmp_path / name
        proc = subprocess.run([sys.executable, "-m", "parainfer.cli", "report", str(measured[2]), "--plot", str(out)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "records" in proc.stdout and out.stat().st_size > 10_000
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
    assert "Plotly.newPlot(" in (tmp_path / "t.html").read_text()


def test_simulate_cli_prints_a_table(measured: dict[int, Path]) -> None:
    proc = subprocess.run([sys.executable, "-m", "parainfer.cli", "simulate", "--cost-from", str(measured[1]),
                           "--workers", "1,2,1024", "--policy", "dynamic,lpt", "--records", "200000"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "| 1024 | lpt |" in proc.stdout and "Amdahl serial fraction" in proc.stdout
