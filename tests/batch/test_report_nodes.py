"""Reports of multi-node runs: the summary names the executor and its nodes; plots label workers
with their node."""

from __future__ import annotations

from parainfer.batch.plots import worker_labels
from parainfer.batch.report import TimingReport, summary_lines


def ray_report() -> dict:
    report = TimingReport(workers=3)
    report.extra["executor"] = {"name": "ray", "address": "10.0.0.1:6379",
                                "nodes": [{"node": "10.0.0.1", "workers": 2}, {"node": "10.0.0.2", "workers": 1}],
                                "worker_nodes": ["10.0.0.1", "10.0.0.2", "10.0.0.1"]}
    return report.to_dict()


def test_summary_names_the_executor_and_workers_per_node() -> None:
    lines = summary_lines(ray_report())
    assert "executor ray at 10.0.0.1:6379: 2 nodes (workers per node 10.0.0.1: 2, 10.0.0.2: 1)" in lines


def test_plot_labels_each_worker_with_its_node_and_local_runs_stay_plain() -> None:
    assert worker_labels(ray_report()) == ["worker 0 @ 10.0.0.1", "worker 1 @ 10.0.0.2", "worker 2 @ 10.0.0.1"]
    local = TimingReport(workers=2)
    local.extra["executor"] = {"name": "local", "nodes": [{"node": "h", "workers": 2}], "worker_nodes": ["h", "h"]}
    assert worker_labels(local.to_dict()) == ["worker 0", "worker 1"]


def test_plot_draws_a_ray_report(tmp_path) -> None:
    from parainfer.batch.plots import save_plot

    report = ray_report()
    report["timeline"] = [[0, 0, 0.0, 0.5, 4, 40, 48], [1, 1, 0.1, 0.4, 4, 40, 48], [2, 2, 0.0, 0.3, 4, 40, 48]]
    out = save_plot(report, tmp_path / "t.png")
    assert out.stat().st_size > 1000
