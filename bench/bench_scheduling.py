"""Scheduling benchmarks, each measured side by side in one run:

1. ``bucketing``: padding efficiency and throughput with and without length bucketing, on
   VADER (short, mixed lengths) and BBC (long articles), default classifier, 2 workers;
2. ``straggler``: makespan and imbalance of each policy with one worker 3x slower
   (``parainfer.testing:sleepy``, 3 workers);
3. ``overhead``: the whole engine with a no-op model (``parainfer.testing:echo``) at 10k, 100k
   and 1M records, batches of 256 and 16 (and 1 at 100k): records/s, tasks/s, the driver's peak
   memory, time to the first output row.

Usage: python bench/bench_scheduling.py [bucketing] [straggler] [overhead] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNNER = """
import json, resource, sys
from parainfer.config import JobConfig
from parainfer.batch.job import Job
report = Job(JobConfig(**json.loads(sys.argv[1]))).run()
report["driver_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({k: v for k, v in report.items() if k != "timeline"}))
"""


def run_job(env: dict[str, str] | None = None, **config: object) -> tuple[dict, float | None]:
    """Run a job in a fresh process; returns (report + driver_peak_rss_mb, seconds to first output)."""
    out = Path(str(config["output"]))
    out.unlink(missing_ok=True)  # so the first-output clock sees only this run's rows
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, json.dumps({"quiet": True, "overwrite": True, **config})],
                            stdout=subprocess.PIPE, env={**os.environ, **(env or {})}, text=True)
    t0, first = time.perf_counter(), None
    while proc.poll() is None:
        if first is None and out.exists() and out.stat().st_size > 0:
            first = time.perf_counter() - t0
        time.sleep(0.01)
    stdout = proc.stdout.read()
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"job failed with {proc.returncode}")
    return json.loads(stdout.strip().splitlines()[-1]), first


def bucketing(tmp: Path, quick: bool) -> None:
    from parainfer.platform import datasets

    print("\n## Length bucketing (classify, 2 workers, auto dtype)\n")
    print("| dataset | bucketing | records | padding efficiency | records/s (parallel phase) | ratio |")
    print("|---|---|---|---|---|---|")
    for name in ("vader", "bbc"):
        path = datasets.fetch(name)
        if quick:
            lines = path.read_text(encoding="utf-8").splitlines()[:: 10 if name == "vader" else 4]
            path = tmp / f"{name}.jsonl"
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        rates = {}
        for window in (1, 2048):
            rep, _ = run_job(input=str(path), output=str(tmp / f"{name}{window}.jsonl"), workers=2,
                             bucket_window=window)
            rates[window] = rep["parallel_throughput_records_per_s"]
            print(f"| {name} | {'on (window 2048)' if window > 1 else 'off'} | {rep['records']} | "
                  f"{rep['padding_efficiency']:.2f} | {rates[window]:.1f} | {rates[window] / rates[1]:.2f} |")


def straggler(tmp: Path, quick: bool) -> None:
    src = tmp / "straggler.jsonl"
    n = 2400 if quick else 6000
    src.write_text("".join(json.dumps({"id": i, "text": "tok " * (2 + (i * 13) % 30)}) + "\n" for i in range(n)))
    env = {"PARAINFER_TEST_SLOW_WORKER": "2", "PARAINFER_TEST_SLOWDOWN": "3", "PARAINFER_TEST_MS_PER_TOKEN": "0.12"}
    print("\n## One 3x straggler among 3 workers (sleepy model, batch 16)\n")
    print("| policy | makespan T_N (s) | imbalance | x static makespan |")
    print("|---|---|---|---|")
    base = None
    for policy in ("static", "dynamic", "lpt", "steal"):
        rep, _ = run_job(env, input=str(src), output=str(tmp / f"s_{policy}.jsonl"), workers=3, policy=policy,
                         batch_size=16, model="parainfer.testing:sleepy")
        base = base or rep["t_parallel_s"]
        print(f"| {policy} | {rep['t_parallel_s']:.2f} | {rep['imbalance']:.3f} | {rep['t_parallel_s'] / base:.2f} |")


def overhead(tmp: Path, quick: bool) -> None:
    rng = random.Random(0)
    sizes = (10_000, 100_000) if quick else (10_000, 100_000, 1_000_000)
    print("\n## Engine overhead with a no-op model (echo), 2 workers\n")
    print("| records | batch size | tasks | records/s (whole job) | records/s (parallel phase) | tasks/s "
          "| driver peak RSS (MB) | first output row (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for n in sizes:
        src = tmp / f"echo{n}.jsonl"
        with src.open("w") as f:
            for i in range(n):
                f.write(json.dumps({"id": i, "text": "word " * rng.randint(1, 40)}) + "\n")
        for batch in (256, 16, 1) if n == 100_000 else (256, 16):  # batch 1: the per-task cost alone
            rep, first = run_job(input=str(src), output=str(tmp / "echo_out.jsonl"), workers=2, batch_size=batch,
                                 model="parainfer.testing:echo")
            tasks_s = rep["tasks"] / rep["t_parallel_s"] if rep["t_parallel_s"] else 0.0
            print(f"| {n:,} | {batch} | {rep['tasks']:,} | {rep['throughput_records_per_s']:,.0f} | "
                  f"{rep['parallel_throughput_records_per_s']:,.0f} | {tasks_s:,.0f} | "
                  f"{rep['driver_peak_rss_mb']:.0f} | {first if first is not None else float('nan'):.2f} |")
        src.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="*", default=["bucketing", "straggler", "overhead"])
    parser.add_argument("--quick", action="store_true", help="smaller inputs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for part in args.parts:
            {"bucketing": bucketing, "straggler": straggler, "overhead": overhead}[part](Path(tmp), args.quick)


if __name__ == "__main__":
    main()
