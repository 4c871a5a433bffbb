"""The driver's serial cost per record, before and after, in one run.

Runs the same job with two source trees (``--old`` and ``--new``, each a ``src`` folder put
first on PYTHONPATH), alternating, each in a fresh process, and measures the driver
process's CPU seconds over the job loop, from its first task creation to the end of
``Job.run()`` (the record-mode loop: ``record_mode.RecordDriver``; ``time.process_time``: the main thread and the queue feeder threads; the
workers are other processes; start-up is left out), divided by the records. The same
measure for both trees, so it does not depend on the newer report's ``driver_busy_s``.

Jobs: ``classify`` (the default VADER classifier, 2 workers) and ``echo`` (the no-op callable
``parainfer.testing:echo``, 2 workers) on a JSONL input, in record mode (``--shard-mode off``,
the default here: an input of 64 MiB or more would otherwise run sharded).

Before/after for the record-mode driver rework: ``--old`` = main at be21435
(``git archive be21435 src | tar -x -C /tmp/base``), ``--new`` = this tree.

With ``--dashboard`` the ``new`` runs also serve the live dashboard (``--dashboard 127.0.0.1:0``)
with one page listening to its event stream (a reader thread in the driver process, so its CPU
counts against the driver too): ``--old src --new src --dashboard`` measures the dashboard's cost.

Usage:
    python bench/bench_driver.py --old /tmp/old/src --new src --input vader3k.jsonl --job classify --rounds 2
    python bench/bench_driver.py --old src --new src --dashboard --input echo100k.jsonl --job echo --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

RUNNER = """
import json, sys, time
from parainfer.config import JobConfig
try:  # the record-mode loop: RecordDriver since the job setup was split from the drivers
    from parainfer.batch.job import Job
    from parainfer.batch.record_mode import RecordDriver as Loop
except ImportError:  # an older tree (engine.py): the loop was Job's own
    from parainfer.engine import Job
    Loop = Job
if __name__ == "__main__":
    config = json.loads(sys.argv[1])
    if config.get("dashboard"):  # one page listening to the event stream while the job runs
        import threading, urllib.request
        from parainfer.batch.monitor import JobMonitor
        watch = JobMonitor.watch
        def watching(self, driver):
            watch(self, driver)
            def listen(url=self.url + "/api/events"):
                try:
                    with urllib.request.urlopen(url) as stream:
                        for _ in stream:
                            pass
                except OSError:
                    pass
            threading.Thread(target=listen, daemon=True).start()
        JobMonitor.watch = watching
    job = Job(JobConfig(**config))
    loop_start = []
    create = Loop._create_tasks
    def first_create(self, *args):  # the job loop starts with its first task creation
        if not loop_start:
            loop_start.append(time.process_time())
        return create(self, *args)
    Loop._create_tasks = first_create
    report = job.run()
    report["driver_cpu_s"] = time.process_time() - loop_start[0]
    print(json.dumps({k: v for k, v in report.items() if k != "timeline"}))
"""

JOBS = {"classify": {"task": "classify"}, "echo": {"model": "parainfer.testing:echo"}}


def run_once(src: str, job: str, input_path: str, workers: int, out: Path, report: Path | None = None,
             shard_mode: str = "off", dashboard: bool = False) -> dict:
    """One job in a fresh process with ``src`` first on PYTHONPATH; returns its report (the
    whole report, timeline included, is also written to ``report`` when given)."""
    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve()), "HF_HUB_OFFLINE": "1"}
    config = {"input": input_path, "output": str(out), "workers": workers, "quiet": True, "overwrite": True,
              "shard_mode": shard_mode, **JOBS[job], **({"report": str(report)} if report else {}),
              **({"dashboard": "127.0.0.1:0"} if dashboard else {})}
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(RUNNER)
    done = subprocess.run([sys.executable, f.name, json.dumps(config)], env=env, capture_output=True, text=True,
                          check=True)
    os.unlink(f.name)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", required=True, help="src folder of the baseline tree")
    ap.add_argument("--new", required=True, help="src folder of the tree under test")
    ap.add_argument("--input", required=True)
    ap.add_argument("--job", choices=sorted(JOBS), default="classify")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--shard-mode", default="off", choices=("off", "auto", "on"))
    ap.add_argument("--dashboard", action="store_true", help="the new tree's runs serve the live dashboard, "
                    "one page listening")
    ap.add_argument("--reports", help="folder to keep each run's report in (for `parainfer simulate --cost-from`)")
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()}", file=sys.stderr)
    print("| tree | round | records | driver CPU s | driver µs/record | report driver_us_per_record | "
          "startup s | wall s | records/s (whole) | records/s (parallel) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    per_tree: dict[str, list[float]] = {"old": [], "new": []}
    speed: dict[str, list[float]] = {"old": [], "new": []}
    outputs: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, src in (("old", args.old), ("new", args.new)):
                keep = Path(args.reports) / f"{args.job}-{name}-{r + 1}.json" if args.reports else None
                rep = run_once(src, args.job, args.input, args.workers, Path(tmp) / f"{name}.jsonl", keep,
                               args.shard_mode, dashboard=args.dashboard and name == "new")
                outputs[name] = (Path(tmp) / f"{name}.jsonl").read_bytes()
                us = rep["driver_cpu_s"] / rep["records"] * 1e6
                per_tree[name].append(us)
                speed[name].append(rep["parallel_throughput_records_per_s"])
                print(f"| {name} | {r + 1} | {rep['records']:,} | {rep['driver_cpu_s']:.2f} | {us:.1f} | "
                      f"{rep.get('driver_us_per_record', '-')} | {rep['t_startup_s']:.2f} | {rep['wall_s']:.2f} | "
                      f"{rep['throughput_records_per_s']:,.0f} | {rep['parallel_throughput_records_per_s']:,.0f} |",
                      flush=True)
            print(f"<!-- round {r + 1}: outputs byte-identical: {outputs['old'] == outputs['new']}, "
                  f"load average {os.getloadavg()[0]:.2f} -->", flush=True)
    old, new = min(per_tree["old"]), min(per_tree["new"])
    print(f"\nbest driver µs/record: old {old:.1f}, new {new:.1f}, ratio old/new {old / new:.2f}; "
          f"best parallel records/s: old {max(speed['old']):,.0f}, new {max(speed['new']):,.0f}")
    print(f"load average at end: {os.getloadavg()}", file=sys.stderr)


if __name__ == "__main__":
    main()
