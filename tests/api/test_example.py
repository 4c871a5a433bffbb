"""The worked example (examples/text_classification) runs end to end, small: 200 texts, the
sklearn backend, 10 subsets on 1 and 2 workers; its timing report and result check print."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "text_classification" / "classify.py"


def test_worked_example_small(tmp_path: Path, vader_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--workdir", str(tmp_path), "--texts", "200",
                           "--backends", "sklearn", "--workers", "1,2"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "200 labelled texts (100 positive)" in out
    assert "trained sklearn" in out and "validation accuracy" in out
    assert "200 texts in 10 tasks on 1 worker(s)" in out and "200 texts in 10 tasks on 2 worker(s)" in out
    assert "T_c" in out and "T_w" in out and "makespan (MAX)" in out
    assert "labels identical: True" in out
