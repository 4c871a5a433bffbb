"""Worker faults with real processes and signals: workers SIGKILLed at random moments, a poison
record that crashes its worker every time, a task that hangs."""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import pytest

import faultkit


@pytest.mark.parametrize("trial", range(10))
def test_worker_killed_at_a_random_moment_loses_and_duplicates_nothing(trial: int, fault_input: Path, clean_output,
                                                                       tmp_path: Path) -> None:
    rng = random.Random(100 + trial)
    out, report = tmp_path / "out.jsonl", tmp_path / "report.json"
    proc = faultkit.start(faultkit.command(fault_input, out, "--report", str(report)))
    assert len(faultkit.wait_workers(proc)) == 2
    # The job needs >= 1.5 s of (sleep) compute per worker once they exist, so the first kill
    # always lands while it runs; the second may come after the end of the job.
    kills, started = 0, time.monotonic()
    for delay in sorted(rng.uniform(0.0, 1.8) for _ in range(2)):
        time.sleep(max(0.0, started + delay - time.monotonic()))
        pids = faultkit.worker_pids(proc.pid)
        if pids and proc.poll() is None:
            faultkit.os.kill(rng.choice(pids), signal.SIGKILL)
            kills += 1
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert out.read_bytes() == clean_output("jsonl")
    rep = json.loads(report.read_text())
    assert kills >= 1 and rep["restarts"] <= kills and rep["failed_records"] == 0
    assert sum(w["records"] for w in rep["per_worker"]) == faultkit.RECORDS


def test_poison_record_that_kills_its_worker_is_isolated(tmp_path: Path) -> None:
    src = faultkit.write_input(tmp_path / "in.jsonl", records=3000, marked=(1234,))
    out, report, errors = tmp_path / "out.jsonl", tmp_path / "r.json", tmp_path / "err.jsonl"
    proc = faultkit.run(faultkit.command(src, out, "--batch-size", "64", "--max-retries", "1", "--report",
                                         str(report), "--errors", str(errors),
                                         model="parainfer.testing:crash_on_marker"))
    assert proc.returncode == 1, proc.stderr
    assert [r[0] for r in faultkit.ids_and_lengths(out)] == [f"r{i}" for i in range(3000) if i != 1234]
    (err,) = faultkit.read_errors(errors)
    assert err["id"] == "r1234" and err["line"] == 1235 and "worker died 2 time(s)" in err["reason"]
    assert "exited with code -9" in err["reason"]
    rep = json.loads(report.read_text())
    # The task that held it went back as its batches when it joined several (one split), then
    # its batch was halved down to the record: 64 -> 32 -> ... -> 1; one restart and one retry
    # per split, and the two deaths of the record alone (--max-retries 1).
    splits = 6 + (rep["most_batches_per_task"] > 1)
    assert rep["failed_records"] == 1 and rep["bisected_tasks"] == splits
    assert rep["restarts"] == splits + 2 and rep["retries"] == splits + 1


def test_hung_task_is_abandoned_bisected_and_its_record_quarantined(tmp_path: Path) -> None:
    src = faultkit.write_input(tmp_path / "in.jsonl", records=300, marked=(77,))
    out, report, errors = tmp_path / "out.jsonl", tmp_path / "r.json", tmp_path / "err.jsonl"
    t0 = time.monotonic()
    proc = faultkit.run(faultkit.command(src, out, "--batch-size", "4", "--max-retries", "0", "--task-timeout", "0.5",
                                         "--report", str(report), "--errors", str(errors),
                                         model="parainfer.testing:hang_on_marker"))
    assert proc.returncode == 1, proc.stderr
    assert time.monotonic() - t0 < 30
    assert [r[0] for r in faultkit.ids_and_lengths(out)] == [f"r{i}" for i in range(300) if i != 77]
    (err,) = faultkit.read_errors(errors)
    assert err["id"] == "r77" and "timed out after 0.5 s" in err["reason"]
    rep = json.loads(report.read_text())
    splits = 2 + (rep["most_batches_per_task"] > 1)  # its task's batches, then 4 -> 2 -> 1
    assert rep["bisected_tasks"] == splits and rep["restarts"] == splits + 1
