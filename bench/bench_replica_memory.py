"""Memory of one model replica and the startup cost of a job (docs/fault-tolerance.md).

Runs ``parainfer run INPUT -o OUT --report R [ARGS...]`` and samples every worker's resident
memory (VmRSS in /proc/PID/status, Linux) every 0.1 s; prints each worker's peak, the report's
``t_startup_s`` and each worker's ``load_s``.

    python bench/bench_replica_memory.py INPUT.jsonl --workers 2 [--model ...]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def worker_pids(driver: int) -> list[int]:
    """Children of the driver started by multiprocessing's spawn."""
    try:
        children = Path(f"/proc/{driver}/task/{driver}/children").read_text().split()
    except OSError:
        return []
    return [int(p) for p in children if b"spawn_main" in _cmdline(int(p))]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def rss_mib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def main() -> None:
    src, args = sys.argv[1], sys.argv[2:]
    with tempfile.TemporaryDirectory() as tmp:
        out, rep = os.path.join(tmp, "out.jsonl"), os.path.join(tmp, "report.json")
        t0 = time.time()
        proc = subprocess.Popen([sys.executable, "-m", "parainfer.cli", "run", src, "-o", out, "--report", rep, "-q",
                                 *args])
        peak: dict[int, int] = {}
        while proc.poll() is None:
            for pid in worker_pids(proc.pid):
                peak[pid] = max(peak.get(pid, 0), rss_mib(pid))
            time.sleep(0.1)
        report = json.loads(Path(rep).read_text())
    print(f"args {args}: exit {proc.returncode}, wall {time.time() - t0:.1f} s, worker peak RSS (MiB) "
          f"{sorted(peak.values())}, t_startup_s {report['t_startup_s']:.2f}, load_s "
          f"{[round(w['load_s'], 2) for w in report['per_worker']]}")


if __name__ == "__main__":
    main()
