"""Every python code block of docs/api.md runs as a script and succeeds (docs never rot).

Each block is a complete script (imports included, no ``__main__`` guard: none is needed); it
runs in its own process in a fresh folder, as a user would run it. These blocks load the real built-in
classifier: this is the API's test with a real model.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", DOC.read_text(encoding="utf-8"), flags=re.S | re.M)


def test_the_page_has_examples() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_docs_example_runs(index: int, tmp_path: Path, vader_path: Path) -> None:
    script = tmp_path / f"api_example_{index}.py"
    script.write_text(BLOCKS[index], encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, f"docs/api.md example {index + 1} failed:\n{BLOCKS[index]}\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip(), "every example prints what it shows"
