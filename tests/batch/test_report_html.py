"""The interactive HTML report: a real small job's report drawn as one self-contained plotly page,
whose per-task hover data is the report's own timeline."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from parainfer.batch.plots import HOVER_COLUMNS, STATES, task_state
from parainfer.batch.report import TIMELINE_COLUMNS


def marker_job_report(tmp: Path, records: int = 600, poison: tuple[int, ...] = (50, 400)) -> Path:
    """A 2-worker run of the echo model (``raise_on_marker``) over ``records`` records, those at
    ``poison`` failing (their tasks report failed records); returns its report's path."""
    from parainfer.batch.job import Job
    from parainfer.config import JobConfig
    from parainfer.models.python_callable import CallablePredictor

    src = tmp / "in.jsonl"
    texts = ["tok " * (1 + (i * 7) % 30) + ("@@crash@@" if i in poison else "") for i in range(records)]
    src.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    report = tmp / "r.json"
    Job(JobConfig(input=str(src), output=str(tmp / "o.jsonl"), errors=str(tmp / "err.jsonl"), workers=2,
                  batch_size=16, report=str(report), quiet=True),
        CallablePredictor("parainfer.testing:raise_on_marker")).run()
    return report


@pytest.fixture(scope="module")
def report_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return marker_job_report(tmp_path_factory.mktemp("html"))


def plotly_call(script: str) -> tuple[list[dict], dict]:
    """The data and layout arguments of ``Plotly.newPlot(id, data, layout, config)`` in ``script``
    (the page less plotly.js)."""
    decoder = json.JSONDecoder()
    pos = script.index("Plotly.newPlot(") + len("Plotly.newPlot(")
    args = []
    for _ in range(3):  # the div id, data, layout: JSON values separated by commas and whitespace
        pos = len(script) - len(script[pos:].lstrip(" \n\t,"))
        value, pos = decoder.raw_decode(script, pos)
        args.append(value)
    return args[1], args[2]


def array(value: object) -> np.ndarray:
    """A plotly array: a JSON list, or plotly's typed-array form {"dtype", "bdata", "shape"}."""
    if isinstance(value, dict):
        out = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        return out.reshape([int(n) for n in str(value["shape"]).split(",")]) if "shape" in value else out
    return np.asarray(value, dtype=float)


def test_html_report_is_offline_and_hover_matches_the_timeline(report_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    proc = subprocess.run([sys.executable, "-m", "parainfer.cli", "report", str(report_path), "--plot", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    page = out.read_text(encoding="utf-8")
    # Self-contained: plotly.js itself is inline, no script or stylesheet is fetched, and outside
    # the library's source (which names map-tile servers as defaults) the page holds no URL.
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", page, re.S)
    library = [s for s in scripts if "plotly.js v" in s]
    assert len(library) == 1 and len(library[0]) > 3_000_000
    assert not re.search(r"<script[^>]*\bsrc=", page) and not re.search(r"<link[^>]*\bhref=", page)
    rest = page.replace(library[0], "")
    assert "Plotly.newPlot(" in rest and not re.search(r"https?://", rest)

    report = json.loads(report_path.read_text())
    assert report["timeline_columns"] == TIMELINE_COLUMNS
    timeline = report["timeline"]
    assert len(timeline) == report["tasks"] and report["failed_records"] == 2
    assert sorted(task_state(row) for row in timeline if task_state(row) != "ok") == ["failed", "failed"]

    data, layout = plotly_call(rest)
    # One hover point per task, in timeline order: its worker's row and the task's own figures.
    hover = [t for t in data if t.get("name") == "tasks"]
    assert len(hover) == 1 and hover[0]["hovertemplate"].startswith("<b>%{y}</b>")  # the row's label
    custom = array(hover[0]["customdata"])
    assert custom.shape == (len(timeline), len(HOVER_COLUMNS))
    assert array(hover[0]["y"]).tolist() == [r[1] for r in timeline]
    for row, got in zip(timeline, custom):
        want = [row[0], row[4], row[5], row[6], row[2], row[3], row[3] - row[2], row[7], row[8]]
        assert got == pytest.approx(want, rel=1e-6, abs=1e-4), row
    assert array(hover[0]["x"]) == pytest.approx([(r[2] + r[3]) / 2 for r in timeline], abs=1e-4)
    for column in ("customdata[2]", "customdata[3]", "customdata[4]", "customdata[5]", "customdata[7]"):
        assert column in hover[0]["hovertemplate"]
    # The Gantt bars: one line trace per state present, coloured by state, on the task's worker's row.
    bars = [t for t in data if t.get("mode") == "lines" and t.get("name") in STATES]
    assert {t["name"] for t in bars} == {"ok", "failed"}
    for t in bars:
        assert t["line"]["color"] == STATES[t["name"]]
        rows = [r for r in timeline if task_state(r) == t["name"]]
        ends = array(t["x"]).reshape(-1, 3)
        np.testing.assert_allclose(ends[:, :2], [[r[2], r[3]] for r in rows], atol=1e-4)
        assert np.isnan(ends[:, 2]).all()  # the gap between two bars
        assert array(t["y"]).reshape(-1, 3).tolist() == [[r[1]] * 3 for r in rows]
    assert layout["yaxis"]["ticktext"] == ["worker 0", "worker 1"]
    # The other panels: throughput, the T_c/T_s/T_e/T_w breakdown, speedup against the ideal.
    breakdown = next(t for t in data if t["type"] == "bar" and t.get("orientation") == "h")
    assert array(breakdown["x"]) == pytest.approx([report[k] for k in ("t_create_s", "t_schedule_s", "t_execute_s",
                                                                       "t_wait_s")])
    speedup = next(t for t in data if t["type"] == "bar" and t.get("orientation") != "h")
    assert array(speedup["y"]) == pytest.approx([report["speedup"], 2])
    assert any(t.get("name") == "records/s" for t in data)


def test_a_retried_task_gets_its_own_colour_and_hover(report_path: Path) -> None:
    """A row whose ``attempt`` is > 0 (given out again after a worker died) is drawn in the
    "retried" colour on its worker's row, and its hover says which attempt it was."""
    from parainfer.batch.plots import interactive

    report = json.loads(report_path.read_text())
    row = next(r for r in report["timeline"] if task_state(r) == "ok")
    row[7] = 2
    fig = interactive(report)
    retried = [t for t in fig.data if t.name == "retried"]
    assert len(retried) == 1 and retried[0].line.color == STATES["retried"]
    assert list(retried[0].x[:2]) == pytest.approx([row[2], row[3]], abs=1e-4) and set(retried[0].y) == {row[1]}
    hover = next(t for t in fig.data if t.name == "tasks")
    mine = [c for c in hover.customdata if c[0] == row[0]]
    assert len(mine) == 1 and mine[0][HOVER_COLUMNS.index("attempt")] == 2


def test_hover_names_the_node_of_a_multi_node_run(report_path: Path) -> None:
    """With workers on several nodes (Ray), the rows, which the hover shows as %{y}, are labelled
    with each worker's node."""
    from parainfer.batch.plots import interactive

    report = json.loads(report_path.read_text())
    report["executor"] = {"name": "ray", "worker_nodes": ["10.0.0.1", "10.0.0.2"]}
    fig = interactive(report)
    assert list(fig.layout.yaxis.ticktext) == ["worker 0 @ 10.0.0.1", "worker 1 @ 10.0.0.2"]
    assert list(fig.layout.yaxis.tickvals) == [0, 1]
    hover = next(t for t in fig.data if t.name == "tasks")
    assert hover.hovertemplate.startswith("<b>%{y}</b>") and list(hover.y) == [r[1] for r in report["timeline"]]
