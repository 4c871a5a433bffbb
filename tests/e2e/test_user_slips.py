"""Every user slip is one line on stderr with its own exit code, never a traceback; notices that
change what the user gets (renamed columns, a job that seems hung) are said once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from parainfer.errors import UsageError
from parainfer.batch.report import TimingReport, write_report


def parainfer(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "parainfer.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def one_line(proc: subprocess.CompletedProcess, code: int, needle: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.fixture()
def files(tmp_path: Path) -> Path:
    (tmp_path / "in.jsonl").write_text('{"id": 1, "text": "hi", "length": 5}\n{"id": 2, "text": "yo", "length": 6}\n')
    (tmp_path / "other.json").write_text('{"name": "not a report"}')
    write_report(TimingReport(workers=1).to_dict(), tmp_path / "r.json")
    return tmp_path


@pytest.mark.parametrize("args, needle", [
    (["report", "in.jsonl"], "is not JSON"),
    (["report", "other.json"], "is not a parainfer run report"),
    (["simulate", "--cost-from", "other.json", "--workers", "1,2"], "is not a parainfer run report"),
    (["report", "r.json", "--plot", "missing/t.png"], "plot folder 'missing' does not exist"),
    (["run", "in.jsonl", "-o", "/proc/out.jsonl", "--model", "parainfer.testing:echo"], "system folder 'proc'"),
    (["run", "in.jsonl", "-o", "out.jsonl", "--model", "parainfer.testing:echo", "--id-column", "ID"],
     "no id column 'ID'"),
    (["run", "in.jsonl", "-o", "out.jsonl", "--model", "parainfer.testing:echo", "--workers", "3:2"],
     "--workers '3:2': expected a count N (0 = one per core), auto, or MIN:MAX with 1 <= MIN <= MAX"),
    (["run", "in.jsonl", "-o", "out.jsonl", "--model", "parainfer.testing:echo", "--workers", "1:2", "--executor",
      "ray", "--policy", "static"], "elastic --workers MIN:MAX (or auto) on Ray needs --policy dynamic, lpt or steal"),
])
def test_slips_are_one_line_exit_2(files: Path, args: list[str], needle: str) -> None:
    one_line(parainfer(*args, cwd=files), 2, needle)


def test_train_head_never_writes_into_the_package_by_default(files: Path) -> None:
    proc = parainfer("train-head", cwd=files)
    assert proc.returncode == 2 and "Missing option '--output'" in proc.stderr, proc.stderr


def test_generate_options_are_checked_at_start() -> None:
    from parainfer.models.hf_generate import GeneratePredictor

    with pytest.raises(UsageError, match="temperature must be >= 0"):
        GeneratePredictor(temperature=-1.0)
    with pytest.raises(UsageError, match="top_p must be in"):
        GeneratePredictor(top_p=2.0)
    with pytest.raises(UsageError, match="does not fit the context window"):
        GeneratePredictor(max_tokens=10**6)


def test_an_unwritable_output_folder_is_refused(files: Path) -> None:
    folder = files / "ro"
    folder.mkdir()
    mounted = False
    if os.geteuid() == 0:  # root may write anywhere: make it a read-only filesystem instead
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)]).returncode == 0
        if not mounted:
            pytest.skip("running as root without mount: permissions cannot be tested")
    else:
        folder.chmod(0o555)
    try:
        one_line(parainfer("run", "in.jsonl", "-o", "ro/out.jsonl", "--model", "parainfer.testing:echo", cwd=files),
                 2, "is not writable")
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)
        else:
            folder.chmod(0o755)


def test_renamed_input_columns_are_announced_once(files: Path) -> None:
    proc = parainfer("run", "in.jsonl", "-o", "out.jsonl", "--model", "parainfer.testing:echo", "-q", cwd=files)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("'length' written as 'input_length'") == 1, proc.stderr
    rows = [json.loads(line) for line in (files / "out.jsonl").read_text().splitlines()]
    assert [(r["input_length"], r["length"]) for r in rows] == [(5, 2), (6, 2)]


def test_a_job_where_nothing_finishes_warns_naming_task_timeout(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 1, "text": "@@crash@@ hangs"}\n')
    script = ("import sys; from parainfer.config import JobConfig; from parainfer.batch.job import Job; "
              f"Job(JobConfig(input={str(src)!r}, output={str(tmp_path / 'o.jsonl')!r}, workers=1, quiet=True, "
              "model='parainfer.testing:hang_on_marker', stall_warning_s=1.0)).run()")
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        line = ""
        while time.monotonic() < deadline and "warning" not in line:
            line = proc.stderr.readline()
        assert "no task has finished for 1 s" in line and "--task-timeout" in line, line
    finally:
        proc.kill()
        proc.wait()


def test_replicas_that_do_not_fit_in_memory_are_capped_before_all_load(tmp_path: Path, capfd) -> None:
    from parainfer.config import JobConfig
    from parainfer.batch.job import Job

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": "word " * (i % 7 + 1)}) + "\n" for i in range(200)))
    cfg = JobConfig(input=str(src), output=str(tmp_path / "o.jsonl"), model="parainfer.testing:echo", workers=3,
                    quiet=True, memory_budget_bytes=1)  # not even one replica fits: run with the one loaded
    report = Job(cfg).run()
    err = capfd.readouterr().err
    assert "warning: 3 workers do not fit in memory" in err and "running 1 workers" in err, err
    from parainfer.platform.resources import cores

    assert ("3 workers on" in err) == (cores() < 3)  # the warning when workers outnumber the cores
    assert report["workers"] == 1 and len(report["per_worker"]) == 1 and report["failed_records"] == 0
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 200


def test_workers_min_max_on_local_processes_starts_max(files: Path) -> None:
    """Locally MIN:MAX means MAX processes started at once (the job begins with the first ready)."""
    proc = parainfer("run", "in.jsonl", "-o", "o.jsonl", "--model", "parainfer.testing:echo", "--workers", "1:2",
                     "--report", "r2.json", "-q", cwd=files)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((files / "r2.json").read_text())["workers"] == 2
