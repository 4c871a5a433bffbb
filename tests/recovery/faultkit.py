"""Helpers for the fault-injection tests: a sample input, the CLI as a real subprocess, and
finding the worker processes of a running driver (to SIGKILL them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

RECORDS = 2000
MARKER = "@@crash@@"
# sleepy costs MS_PER_TOKEN ms per (chars/4 + 1) tokens: about 1.5 s of compute per worker in all.
ENV = {"PARAINFER_TEST_MS_PER_TOKEN": "0.06", "HF_HUB_OFFLINE": "1"}
FAST_OPTIONS = ["--workers", "2", "--batch-size", "16", "--bucket-window", "128", "--checkpoint-every", "0.1", "-q"]


def write_input(path: Path, records: int = RECORDS, marked: tuple[int, ...] = ()) -> Path:
    """JSONL with ids r0..r{n-1}, texts of 1..40 words, a pass-through column ``k``."""
    with path.open("w") as f:
        for i in range(records):
            text = "word " * (1 + (i * 37) % 40) + (MARKER if i in marked else "")
            f.write(json.dumps({"id": f"r{i}", "text": text, "k": i}) + "\n")
    return path


def command(src: Path, out: Path, *extra: str, model: str = "parainfer.testing:sleepy") -> list[str]:
    return [sys.executable, "-m", "parainfer.cli", "run", str(src), "-o", str(out), "--model", model,
            *FAST_OPTIONS, *extra]


def start(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **ENV, **(env or {})})


def run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **ENV, **(env or {})})


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def worker_pids(driver_pid: int) -> list[int]:
    """Live worker processes of a driver: its children started by multiprocessing's spawn, or
    the children of its forkserver (the default start method: ``executors.start_method``)."""
    pids = []
    for pid in _children(driver_pid):
        cmd = _cmdline(pid)
        if b"spawn_main" in cmd:
            pids.append(pid)
        elif b"forkserver" in cmd:
            pids += _children(pid)
    return pids


def wait_workers(proc: subprocess.Popen, count: int = 2, timeout: float = 60.0) -> list[int]:
    """Wait until the driver ``proc`` has ``count`` live workers (imports can take seconds on a loaded
    machine); returns their pids, or fewer if the driver exited or ``timeout`` passed first."""
    deadline = time.monotonic() + timeout
    pids = worker_pids(proc.pid)
    while len(pids) < count and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
        pids = worker_pids(proc.pid)
    return pids


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pids: list[int], timeout: float = 5.0) -> list[int]:
    """Wait for processes to exit; returns those still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def ids_and_lengths(path: Path) -> list[tuple[str, int]]:
    """(id, length) of every row of a JSONL output, in file order."""
    return [(r["id"], r["length"]) for r in map(json.loads, path.read_text().splitlines())]


def read_errors(path: Path) -> list[dict]:
    """Rows of an errors file."""
    return [json.loads(line) for line in path.read_text().splitlines()]
