"""A full disk mid-job is one line (path, cause, records committed, rerun resumes) with exit code 4,
in record mode and in sharded mode alike, and the rerun, once there is room, resumes from the
records the line says are committed to the byte-identical output. In sharded mode a worker that
cannot write its part stops the job at once: no worker traceback, no restart, no split.

The disk is a real small tmpfs when the tests run as root (``mount -t tmpfs``, unmounted after; a
mount that fails fails the test); elsewhere the job runs under RLIMIT_FSIZE, which makes the
kernel fail the write with EFBIG."""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import subprocess
from collections.abc import Iterator
from pathlib import Path

import faultkit
import pytest

LIMIT = 96 * 1024
MODES = {"off": "records", "on": "sharded"}


@contextlib.contextmanager
def small_disk(folder: Path, size: int) -> Iterator[bool]:
    """A tmpfs of ``size`` bytes mounted on ``folder`` as root (yields True; unmounted after);
    not root: yields False (the caller limits the file size instead)."""
    folder.mkdir(exist_ok=True)
    if os.geteuid() != 0:
        yield False
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"mount -t tmpfs failed as root: {done.stderr}"
    try:
        yield True
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def _limit_file_size(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def _fail(cmd: list[str], mounted: bool, limit: int) -> str:
    """Run ``cmd`` on the full disk; check exit 4 and one line without a traceback; return it."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, **faultkit.ENV},
                          preexec_fn=None if mounted else _limit_file_size(limit))
    assert proc.returncode == 4, proc.stderr
    line = proc.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line, proc.stderr
    cause = "No space left on device (ENOSPC)" if mounted else "File too large (EFBIG)"
    assert cause in line and "input records are committed" in line, line
    assert "rerun the same command to resume" in line
    return line


def _committed(line: str) -> int:
    return int(re.search(r"; ([\d,]+) input records are committed", line).group(1).replace(",", ""))


@pytest.mark.parametrize("mode", MODES)
def test_full_disk_is_one_line_exit_4_and_the_rerun_resumes(mode: str, fault_input: Path, clean_output,
                                                            tmp_path: Path) -> None:
    folder = tmp_path / "disk"
    with small_disk(folder, LIMIT) as mounted:
        out = folder / "out.jsonl"
        cmd = faultkit.command(fault_input, out, "--shard-mode", mode, model="parainfer.testing:echo")
        line = _fail(cmd, mounted, LIMIT)
        assert str(out) in line
        if mounted:
            subprocess.run(["mount", "-o", f"remount,size={16 * LIMIT}", str(folder)], check=True)
        report = tmp_path / "report.json"
        again = faultkit.run(cmd + ["--report", str(report)])
        assert again.returncode == 0, again.stderr
        assert out.read_bytes() == clean_output("jsonl")
        rep = json.loads(report.read_text())
        assert rep["data_path"] == MODES[mode]
        assert rep["resumed_records"] == _committed(line)  # the line told the truth


@pytest.mark.parametrize("size, file_limit, fails", [(48 * 1024, 48 * 1024, "part"),
                                                     (450 * 1024, 200 * 1024, "output")])
def test_a_sharded_job_stops_at_its_first_failed_write(size: int, file_limit: int, fails: str, fault_input: Path,
                                                       clean_output, tmp_path: Path) -> None:
    """48 KiB hold no part of the first round (each ~74 KB): the first write error is a worker's.
    Before, each one killed its worker (a traceback), which was restarted and its shard split
    again, dozens of times, before the exit. 450 KiB hold every part (~300 KB) but not the copy
    the driver concatenates them into at the end (not root: ``file_limit`` per file instead)."""
    folder = tmp_path / "disk"
    with small_disk(folder, size) as mounted:
        out = folder / "out.jsonl"
        cmd = faultkit.command(fault_input, out, "--shard-mode", "on", model="parainfer.testing:echo")
        line = _fail(cmd, mounted, file_limit)
        parts = Path(str(out) + ".parainfer-shards")
        named = Path(re.search(r"cannot write '([^']+)'", line).group(1))
        if fails == "part":
            assert named.parent == parts and named.suffix == ".jsonl", line  # a worker's part
            assert _committed(line) == 0
            assert list(parts.iterdir()) == []  # the parts in flight are removed: their space is free
        else:
            assert named == out and _committed(line) == faultkit.RECORDS, line
            assert sorted(p.name for p in folder.iterdir()) == [out.name + ".parainfer-checkpoint.json", parts.name]
        if mounted:
            subprocess.run(["mount", "-o", "remount,size=2m", str(folder)], check=True)
        again = faultkit.run(cmd)
        assert again.returncode == 0, again.stderr
        assert out.read_bytes() == clean_output("jsonl")
