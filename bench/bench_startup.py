"""Start-up of `parainfer run` under each worker start method, alternated in one run (issue 11).

    python bench/bench_startup.py --records 200 --repeats 3

Runs the Quickstart job (classify, 2 workers) on the first N VADER texts, alternating
``PARAINFER_START_METHOD=spawn`` and ``forkserver``, and prints each run's ``t_startup_s``, its
parts (report ``startup``) and the whole command's wall time, then the medians and their ratio.
Needs the VADER data set (``parainfer datasets fetch vader``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHODS = ("spawn", "forkserver")


def run_once(method: str, data: Path, out: Path, workers: int) -> dict:
    """One `parainfer run`; returns its report plus ``command_s`` (wall of the whole command)."""
    report = out.with_suffix(".report.json")
    for p in (out, report, Path(str(out) + ".parainfer-checkpoint.json")):
        p.unlink(missing_ok=True)
    env = {**os.environ, "PARAINFER_START_METHOD": method}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "parainfer.cli", "run", str(data), "--output", str(out),
                    "--workers", str(workers), "--report", str(report), "--quiet"],
                   env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = json.loads(report.read_text())
    r["command_s"] = time.perf_counter() - t
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    src = Path(subprocess.run(["parainfer", "datasets", "fetch", "vader"], capture_output=True, text=True,
                              check=True).stdout.strip())
    tmp = Path(tempfile.mkdtemp(prefix="bench_startup_"))
    data = tmp / "in.jsonl"
    with src.open() as f:
        data.write_text("".join(line for _, line in zip(range(args.records), f)))
    print(f"load average at start: {os.getloadavg()}")
    rows: dict[str, list[dict]] = {m: [] for m in METHODS}
    outputs: dict[str, bytes] = {}
    for i in range(args.repeats):
        for m in METHODS:
            r = run_once(m, data, tmp / f"out_{m}.jsonl", args.workers)
            outputs[m] = (tmp / f"out_{m}.jsonl").read_bytes()
            rows[m].append(r)
            parts = ", ".join(f"{k[:-2]} {v:.2f}" for k, v in r.get("startup", {}).items())
            print(f"{m:10s} run {i + 1}: startup {r['t_startup_s']:.2f} s, command {r['command_s']:.2f} s [{parts}]",
                  flush=True)
    print(f"load average at end: {os.getloadavg()}")
    med = {m: statistics.median(r["t_startup_s"] for r in rows[m]) for m in METHODS}
    cmd = {m: statistics.median(r["command_s"] for r in rows[m]) for m in METHODS}
    print(f"median startup: spawn {med['spawn']:.2f} s, forkserver {med['forkserver']:.2f} s, "
          f"ratio {med['spawn'] / med['forkserver']:.2f}x")
    print(f"median command: spawn {cmd['spawn']:.2f} s, forkserver {cmd['forkserver']:.2f} s, "
          f"ratio {cmd['spawn'] / cmd['forkserver']:.2f}x")
    print("outputs identical:", outputs["spawn"] == outputs["forkserver"])


if __name__ == "__main__":
    main()
