"""Ctrl-C / SIGTERM: the first signal finishes in-flight tasks, commits and exits 130; a second
exits at once. Either way the same command resumes to a byte-identical output."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

import faultkit


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_first_signal_commits_and_exits_130(sig: int, fault_input: Path, clean_output, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    cmd = faultkit.command(fault_input, out, "--checkpoint-every", "60")  # only the stop commits
    proc = faultkit.start(cmd)
    deadline = time.monotonic() + 30
    while not (out.exists() and out.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.05)  # rows are being written (not yet committed)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "resume with the same command" in stderr
    committed = json.loads(Path(str(out) + ".parainfer-checkpoint.json").read_text())["records_done"]
    assert 0 < committed < faultkit.RECORDS
    assert len(out.read_text().splitlines()) == committed  # no bad records: one row per record
    assert not Path(str(out) + ".parainfer-lock").exists()
    resumed = faultkit.run(cmd)
    assert resumed.returncode == 0, resumed.stderr
    assert out.read_bytes() == clean_output("jsonl")


def test_second_signal_exits_at_once_and_the_checkpoint_stays_consistent(fault_input: Path, clean_output,
                                                                         tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    cmd = faultkit.command(fault_input, out)
    proc = faultkit.start(cmd, env={"PARAINFER_TEST_MS_PER_TOKEN": "0.5"})  # slow tasks: a long grace
    workers = faultkit.wait_workers(proc)
    assert len(workers) == 2
    manifest = Path(str(out) + ".parainfer-checkpoint.json")
    deadline = time.monotonic() + 60  # tasks are running (a loaded machine can take seconds to load workers)
    while time.monotonic() < deadline and not (manifest.exists() and json.loads(manifest.read_text() or "{}")
                                               .get("records_done", 0) > 0):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    t = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130 and time.monotonic() - t < 3, stderr
    assert "leaked semaphore" not in stderr, stderr  # multiprocessing resources released before os._exit
    assert faultkit.wait_gone(workers) == []
    assert not Path(str(out) + ".parainfer-lock").exists()  # removed before the immediate exit too
    resumed = faultkit.run(cmd)
    assert resumed.returncode == 0, resumed.stderr
    assert out.read_bytes() == clean_output("csv")
