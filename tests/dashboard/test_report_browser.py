"""The interactive HTML report opened in a real headless Chromium (the OS package): it draws
offline from a file:// URL with no console error, and hovering a task shows that task's own
figures from the run report (worker, task, records, tokens, times)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from tests.batch.test_report_html import marker_job_report
from tests.dashboard.live_helpers import DOCS, chromium, console_errors, wait_for


HOVER_JS = """
const gd = document.querySelector('.js-plotly-plot');
const tasks = gd._fullData.find(t => t.name === 'tasks');
Plotly.Fx.hover(gd, {xval: tasks.x[arguments[0]], yval: tasks.y[arguments[0]]}, 'xy');  // the task's bar middle
"""
UNHOVER_JS = "Plotly.Fx.unhover(document.querySelector('.js-plotly-plot'));"
LABEL_JS = "const label = document.querySelector('.hoverlayer .hovertext'); return label ? label.textContent : null;"


def test_the_html_report_hovers_each_task_with_its_report_figures(tmp_path: Path) -> None:
    report_path = marker_job_report(tmp_path, records=400, poison=(50,))
    page = tmp_path / "r.html"
    proc = subprocess.run([sys.executable, "-m", "parainfer.cli", "report", str(report_path), "--plot", str(page)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(report_path.read_text())
    timeline, columns = report["timeline"], report["timeline_columns"]
    col = {name: i for i, name in enumerate(columns)}
    with chromium() as driver:
        driver.get(page.as_uri())
        wait_for(lambda: driver.execute_script("const gd = document.querySelector('.js-plotly-plot');"
                                               "return !!(gd && gd._fullData && gd._fullData.length);"), 30,
                 "the figure drawn")
        by_task = {(r[col["task"]], r[col["attempt"]]): r for r in timeline}
        seen = set()
        for k in (0, len(timeline) // 2, len(timeline) - 1):
            driver.execute_script(UNHOVER_JS)
            wait_for(lambda: driver.execute_script(LABEL_JS) is None, 10, "the last label gone")
            time.sleep(0.2)  # plotly drops a hover that follows another within its throttle time
            driver.execute_script(HOVER_JS, k)
            text = wait_for(lambda: driver.execute_script(LABEL_JS), 10, f"the hover label of row {k}")
            # The label of the task nearest that bar's middle (a worker runs two tasks at once, so
            # bars overlap): each figure on it must be that task's own in the report.
            match = re.search(r"task (\d+) \(attempt (\d+)\)", text)
            assert match, text
            row = by_task[(int(match[1]), int(match[2]))]
            assert text.startswith(f"worker {row[col['worker']]}task"), text
            assert f"records {row[col['records']]}, failed {row[col['failed_records']]}" in text, text
            assert f"tokens {row[col['tokens']]} real, {row[col['padded_tokens']]} padded" in text, text
            assert f"start {row[col['start_s']]:.3f} s" in text and f"end {row[col['end_s']]:.3f} s" in text, text
            seen.add(int(match[1]))
        assert len(seen) >= 2  # the labels follow the pointer
        assert console_errors(driver) == []
        driver.save_screenshot(str(tmp_path / "report.png"))
        if os.environ.get("PARAINFER_DOC_SCREENSHOTS"):
            driver.save_screenshot(str(DOCS / "report-html.png"))
