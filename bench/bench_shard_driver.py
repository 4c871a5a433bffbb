"""The sharded driver's CPU per shard, before and after, in one run.

Runs the no-op job (``parainfer.testing:echo``, 2 workers started and loaded first) in sharded
mode on N JSONL records with two source trees (``--old`` and ``--new``, each a ``src`` folder
put first on PYTHONPATH), alternating, each in a fresh process, twice per tree per round: with
the default plan (tens of shards) and with shards capped at ``--cap`` bytes (hundreds to
thousands; ``sharded.MAX_SHARD_BYTES`` patched, ``PARAINFER_MIN_SHARD_BYTES=1024``). The
driver's CPU less the final concatenation (the report's ``driver_busy_s`` less
``driver_finish_cpu_s``: planning, handing out, taking back, commits, manifest writes, idle
wake-ups) is measured for both; the difference over the difference in shards is the marginal
CPU per shard, with the fixed costs cancelled. The newer tree also reports its split
(``driver_shard_us``: hand out, take back).

Usage:
    python bench/bench_shard_driver.py --old /tmp/old/src --new src --records 100000 --cap 8192 --rounds 2
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
import parainfer.batch.shard_mode as sharded
from parainfer.config import JobConfig
from parainfer.batch.job import Job, start_workers, wait_ready
from parainfer.models.registry import build_predictor
if __name__ == "__main__":
    src, out, cap = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if cap:
        sharded.MAX_SHARD_BYTES = cap
    workers = start_workers(build_predictor("classify", "parainfer.testing:echo"), 2)
    wait_ready(workers)
    cfg = JobConfig(input=src, output=out, workers=2, quiet=True, overwrite=True, shard_mode="on",
                    task="classify", model="parainfer.testing:echo")
    t = time.perf_counter()
    rep = Job(cfg).run(workers)
    wall = time.perf_counter() - t
    workers.shutdown()
    print("RESULT " + json.dumps({"wall": wall, "shards": rep["shards"]["run"], "busy": rep["driver_busy_s"],
                                  "finish": rep.get("driver_finish_cpu_s", 0.0), "split": rep.get("driver_shard_us")}))
"""


def make_input(records: int, folder: Path) -> Path:
    path = folder / f"in{records}.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for i in range(records):
            f.write(json.dumps({"id": i, "text": f"a short text, number {i}"}) + "\n")
    return path


def run(tree: str, src: Path, out: Path, cap: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve()), "HF_HUB_OFFLINE": "1",
           "PARAINFER_MIN_SHARD_BYTES": "1024"}
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(src), str(out), str(cap)], env=env,
                          capture_output=True, text=True, check=True)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", required=True)
    ap.add_argument("--new", default="src")
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--cap", type=int, default=8192)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench_shard_driver_"))
    src = make_input(args.records, folder)
    print(f"input {src.stat().st_size / 1e6:.1f} MB, {args.records:,} records; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| round | tree | shards (default / capped) | driver CPU less concat, s (default / capped) "
          "| marginal ms per shard | split µs/shard (out / back) | wall s capped |")
    print("|---|---|---|---|---|---|---|")
    per: dict[str, list[float]] = {"old": [], "new": []}
    for rnd in range(args.rounds):
        for name, tree in (("old", args.old), ("new", args.new)):
            base = run(tree, src, folder / "out.jsonl", 0)
            small = run(tree, src, folder / "out.jsonl", args.cap)
            book = [r["busy"] - r["finish"] for r in (base, small)]
            ms = (book[1] - book[0]) / max(1, small["shards"] - base["shards"]) * 1e3
            per[name].append(ms)
            split = small["split"] or {}
            print(f"| {rnd} | {name} | {base['shards']} / {small['shards']} | {book[0]:.4f} / {book[1]:.4f} | "
                  f"{ms:.3f} | {split.get('dispatch', '-')} / {split.get('complete', '-')} | {small['wall']:.2f} |",
                  flush=True)
    old, new = sum(per["old"]) / len(per["old"]), sum(per["new"]) / len(per["new"])
    print(f"mean marginal driver CPU per shard: old {old:.3f} ms, new {new:.3f} ms (old/new {old / new:.2f}x); "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
