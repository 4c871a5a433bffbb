"""Do N model replicas fit this machine? Checked before all N load, not after the OOM killer.

The memory arithmetic of ``executors.pool.plan_start``, which starts the local workers: all at
once when N estimated replicas (2 x the weights on disk + 300 MiB each) take under half the
available memory (Linux's MemAvailable: free memory plus the caches the kernel can drop);
otherwise, or with a memory budget, worker 0 alone first, whose measured VmRSS sizes the job to
min(N, floor(0.8 x memory / replica)) workers (one stderr line when fewer than asked).
``warn_cores`` warns when CPU workers outnumber the cores. More: docs/fault-tolerance.md, "Resources".
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

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


def memory_room(budget: int | None, avail: int | None) -> int | None:
    """Bytes the replicas may use: ``budget``, else SAFETY x ``avail`` (MemAvailable); None: unknown."""
    return budget if budget is not None else (int(SAFETY * avail) if avail else None)


def start_all_at_once(predictor: Any, workers: int, budget: int | None, avail: int | None) -> bool:
    """True when ``workers`` replicas of ``predictor`` start without measuring one first: a
    single worker, unknown memory, or (no budget given) N estimated replicas
    (``estimate_replica_bytes``) take under half the room (``memory_room``)."""
    room = memory_room(budget, avail)
    return workers == 1 or room is None or (budget is None and workers * estimate_replica_bytes(predictor) < room / 2)


def replicas_that_fit(workers: int, replica: int, budget: int | None, avail: int | None) -> int:
    """How many of ``workers`` replicas of ``replica`` bytes fit (at least 1): in ``budget``, else
    in SAFETY x (MemAvailable now + the one measured replica; ``avail``: MemAvailable before
    it loaded, used when unknown now). One stderr line when fewer than ``workers`` fit."""
    room = budget if budget is not None else int(SAFETY * ((available_bytes() or avail or 0) + replica))
    fit = max(1, min(workers, room // max(1, replica)))
    if fit < workers:
        print(f"warning: {workers} workers do not fit in memory: one replica takes {replica / GIB:.2f} GiB "
              f"(worker 0 after loading), {workers} would need {workers * replica / GIB:.1f} GiB and "
              f"{room / GIB:.1f} GiB may be used; running {fit} workers", file=sys.stderr)
    return fit


def cores() -> int:
    """Usable cores of this process."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
