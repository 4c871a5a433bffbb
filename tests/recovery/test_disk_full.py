"""A full disk mid-job is one line (path, cause, records committed, rerun resumes) with exit code 4,
and the rerun, once there is room, resumes to the byte-identical output.

The disk is a real 96 KiB tmpfs when the tests run as root (``mount -t tmpfs``, unmounted after);
elsewhere the job runs under RLIMIT_FSIZE, which makes the kernel fail the write with EFBIG."""

from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path

import faultkit

LIMIT = 96 * 1024


def _mount(folder: Path, size: int) -> bool:
    folder.mkdir(exist_ok=True)
    if os.geteuid() != 0:
        return False
    opts = f"size={size}"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(folder)], capture_output=True)
    return done.returncode == 0


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def test_full_disk_is_one_line_exit_4_and_the_rerun_resumes(fault_input: Path, clean_output, tmp_path: Path) -> None:
    folder = tmp_path / "disk"
    mounted = _mount(folder, LIMIT)
    try:
        out = folder / "out.jsonl"
        cmd = faultkit.command(fault_input, out, model="parainfer.testing:echo")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, **faultkit.ENV},
                              preexec_fn=None if mounted else _limit_file_size)
        assert proc.returncode == 4, proc.stderr
        line = proc.stderr.strip()
        assert len(line.splitlines()) == 1 and "Traceback" not in line, proc.stderr
        cause = "No space left on device (ENOSPC)" if mounted else "File too large (EFBIG)"
        assert cause in line and str(out) in line and "input records are committed" in line, line
        assert "rerun the same command to resume" in line
        if mounted:
            subprocess.run(["mount", "-o", f"remount,size={16 * LIMIT}", str(folder)], check=True)
        again = faultkit.run(cmd)
        assert again.returncode == 0, again.stderr
        assert out.read_bytes() == clean_output("jsonl")
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)
