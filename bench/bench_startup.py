"""Start-up of `parainfer run`, alternated between code versions / start methods in one run.

    python bench/bench_startup.py --records 200 --repeats 3 --before-src /tmp/before/src

Runs the Quickstart job (classify, 2 workers) on the first N VADER texts, alternating the
variants: ``after`` (this tree, default forkserver), ``spawn`` (this tree,
``PARAINFER_START_METHOD=spawn``) and, with ``--before-src DIR``, ``before`` (another checkout's
``src`` put first on ``PYTHONPATH``, e.g. ``git archive be21435 src | tar -x -C /tmp/before``).
Prints each run's ``t_startup_s`` (job start to first dispatch), its parts (report
``startup``) and the whole command's wall time, then the medians and their ratios to ``after``.
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

SRC = str(Path(__file__).resolve().parents[1] / "src")


def variant_env(name: str, before_src: str | None) -> dict[str, str]:
    """The environment of one variant's command (see the module docstring)."""
    env = {**os.environ, "PYTHONPATH": SRC, "PARAINFER_START_METHOD": "forkserver"}
    if name == "spawn":
        env["PARAINFER_START_METHOD"] = "spawn"
    elif name == "before":
        env["PYTHONPATH"] = str(before_src)
    return env


def run_once(env: dict[str, str], data: Path, out: Path, workers: int) -> dict:
    """One `parainfer run`; returns its report plus ``command_s`` (wall of the whole command)."""
    report = out.with_suffix(".report.json")
    for p in (out, report, Path(str(out) + ".parainfer-checkpoint.json")):
        p.unlink(missing_ok=True)
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
    ap.add_argument("--before-src", default=None, help="src/ of the checkout to compare against")
    ap.add_argument("--variants", default=None, help="comma-separated, from before,after,spawn "
                    "(default: before,after with --before-src, else spawn,after)")
    args = ap.parse_args()
    variants = (args.variants or ("before,after" if args.before_src else "spawn,after")).split(",")
    if "before" in variants and not args.before_src:
        ap.error("the 'before' variant needs --before-src DIR")
    src = Path(subprocess.run([sys.executable, "-m", "parainfer.cli", "datasets", "fetch", "vader"],
                              capture_output=True, text=True, check=True).stdout.strip())
    tmp = Path(tempfile.mkdtemp(prefix="bench_startup_"))
    data = tmp / "in.jsonl"
    with src.open() as f:
        data.write_text("".join(line for _, line in zip(range(args.records), f)))
    print(f"load average at start: {os.getloadavg()}")
    rows: dict[str, list[dict]] = {v: [] for v in variants}
    outputs: dict[str, bytes] = {}
    for i in range(args.repeats):
        for v in variants[i % len(variants):] + variants[:i % len(variants)]:  # each variant leads in turn
            r = run_once(variant_env(v, args.before_src), data, tmp / f"out_{v}.jsonl", args.workers)
            outputs[v] = (tmp / f"out_{v}.jsonl").read_bytes()
            rows[v].append(r)
            parts = ", ".join(f"{k[:-2]} {x:.2f}" for k, x in r.get("startup", {}).items())
            print(f"{v:7s} run {i + 1}: startup {r['t_startup_s']:.2f} s, command {r['command_s']:.2f} s [{parts}]",
                  flush=True)
    print(f"load average at end: {os.getloadavg()}")
    for key, label in (("t_startup_s", "startup"), ("command_s", "command")):
        med = {v: statistics.median(r[key] for r in rows[v]) for v in variants}
        ratios = ", ".join(f"{v} {med[v]:.2f} s ({med[v] / med['after']:.2f}x)" for v in variants) \
            if "after" in med else ", ".join(f"{v} {med[v]:.2f} s" for v in variants)
        print(f"median {label}: {ratios}")
    print("outputs identical:", len(set(outputs.values())) == 1)


if __name__ == "__main__":
    main()
