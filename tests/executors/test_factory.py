"""Executors are picked by name (``--executor local|ray``); the engine and the server never import
a concrete executor; ``--executor ray`` without Ray installed is a one-line usage error."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from parainfer.errors import UsageError
from parainfer.executors import make_executor
from parainfer.executors.local import LocalExecutor
from parainfer.models.python_callable import CallablePredictor

SRC = Path(__file__).resolve().parents[2] / "src" / "parainfer"


def test_local_by_name_and_unknown_names_rejected() -> None:
    ex = make_executor("local", CallablePredictor("parainfer.testing:echo"), 2, 1)
    assert isinstance(ex, LocalExecutor) and ex.num_workers == 2 and ex.describe()["name"] == "local"
    with pytest.raises(UsageError, match="unknown executor 'dask'; accepted: local, ray"):
        make_executor("dask", CallablePredictor("parainfer.testing:echo"), 1)


def test_engine_and_server_import_no_concrete_executor() -> None:
    for path in [*sorted((SRC / "batch").glob("*.py")), *sorted((SRC / "serving").rglob("*.py"))]:
        assert not re.search(r"executors\.(local|ray)\b", path.read_text()), path


@pytest.mark.parametrize("command", ["run", "serve"])
def test_ray_executor_without_ray_installed_exits_2_saying_how_to_install(command: str, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 1, "text": "hi"}\n')
    args = ([str(src), "-o", str(tmp_path / "o.jsonl"), "--model", "parainfer.testing:echo"] if command == "run"
            else ["--model", "parainfer.testing:echo", "--port", "0"])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent / "noray"),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "parainfer.cli", command, *args, "--executor", "ray"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: --executor ray needs Ray, which is not installed: "
                                                "pip install 'parainfer[ray]'"]
