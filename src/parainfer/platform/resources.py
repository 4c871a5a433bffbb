"""Do N model replicas fit this machine? Checked before all N load, not after the OOM killer.

``plan_start`` decides how the local workers start: all at once when N estimated replicas
(2 x the weights on disk + 300 MiB each) take under half the available memory (Linux's
MemAvailable: free memory plus the caches the kernel can drop); otherwise, or with a memory
budget, worker 0 alone first, whose measured VmRSS sizes the job to min(N, floor(0.8 x memory
/ replica)) workers (one stderr line when fewer than asked). ``warn_cores`` warns when CPU
workers outnumber the cores. More: docs/fault-tolerance.md, "Resources".
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from parainfer.errors import JobError

BASE_BYTES = 300 << 20  # a worker process without weights: Python, torch, tokenizer
SAFETY = 0.8  # share of the available memory the replicas may take
GIB = 1 << 30


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo in bytes, None where unknown (not Linux)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_bytes(pid: int | None) -> int | None:
    """Resident memory (VmRSS) of a process in bytes, None when unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError, TypeError):
        pass
    return None


def estimate_replica_bytes(predictor: Any) -> int:
    """Rough size of one replica before any loads: 2 x the weight files in ``predictor.model_dir``
    (safetensors / bin / onnx / gguf) + BASE_BYTES; BASE_BYTES when there is no model folder."""
    folder = getattr(predictor, "model_dir", None)
    weights = 0
    if folder and Path(folder).is_dir():
        weights = sum(p.stat().st_size for p in Path(folder).rglob("*")
                      if p.suffix in (".safetensors", ".bin", ".onnx", ".gguf", ".pt") and p.is_file())
    return 2 * weights + BASE_BYTES


def warn_cores(workers: int, device: str, cores: int) -> None:
    """One stderr line when CPU workers outnumber the cores (they then only share them)."""
    if workers > cores and not str(device).startswith("cuda"):
        print(f"warning: {workers} workers on {cores} cores: each gets one thread and they share the cores, "
              f"which rarely helps (default: one worker per core)", file=sys.stderr)


def plan_start(executor: Any, predictor: Any, workers: int, budget: int | None) -> tuple[int, list[Any]]:
    """Start the workers of ``executor``, fewer than ``workers`` when they do not fit in memory.

    Args:
        executor: an unstarted executor for ``workers`` workers. Only one whose replicas share
            this machine's memory (it has ``start(first, count)`` and ``shrink``: the local
            executor) is checked; a Ray executor's replicas live on the cluster's nodes and
            are placed by Ray's own resource accounting, so it just starts.
        predictor: the unloaded predictor (for the weights' size).
        workers: N asked for.
        budget: bytes the replicas may use; None = SAFETY x MemAvailable.

    Returns:
        (workers started, events already read from worker 0 while waiting for it: hand them
        to the engine's event handler).

    Raises:
        JobError: worker 0 failed to load its model (fatally).
    """
    avail = available_bytes()
    room = budget if budget is not None else (int(SAFETY * avail) if avail else None)
    if not hasattr(executor, "shrink") or workers == 1 or room is None or (budget is None and workers * estimate_replica_bytes(predictor) < room / 2):
        executor.start()
        return workers, []
    executor.start(count=1)
    events = _wait_ready(executor)
    replica = rss_bytes(executor.pid(0)) or estimate_replica_bytes(predictor)
    if budget is None:
        room = int(SAFETY * ((available_bytes() or avail or 0) + replica))  # worker 0 is loaded already
    fit = max(1, min(workers, room // max(1, replica)))
    if fit < workers:
        print(f"warning: {workers} workers do not fit in memory: one replica takes {replica / GIB:.2f} GiB "
              f"(worker 0 after loading), {workers} would need {workers * replica / GIB:.1f} GiB and "
              f"{room / GIB:.1f} GiB may be used; running {fit} workers", file=sys.stderr)
        executor.shrink(fit)
    executor.start(first=1)
    return fit, events


def _wait_ready(executor: Any, timeout_s: float = 3600.0) -> list[Any]:
    """Poll until worker 0 is ready (a death while loading restarts it, as the engine would);
    returns [its WorkerReady]."""
    from parainfer.executors.base import WorkerFailed, WorkerReady

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for ev in executor.poll(timeout=0.2):
            if isinstance(ev, WorkerReady):
                return [ev]
            if isinstance(ev, WorkerFailed) and ev.fatal:
                raise JobError(f"worker {ev.worker_id}: {ev.reason.strip()}")
            if isinstance(ev, WorkerFailed):
                executor.restart(ev.worker_id)
    raise JobError(f"worker 0 did not load its model within {timeout_s:.0f} s")


def cores() -> int:
    """Usable cores of this process."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
