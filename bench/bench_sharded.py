"""Record mode vs sharded mode on the same loaded workers, in one run.

For each job, two workers are started once and loaded (``engine.start_workers`` +
``wait_ready``); then the same job runs alternately with ``shard_mode="off"`` (records pass
through the driver) and ``"on"`` (the workers read shards of the input), each writing a fresh
output. Start-up is the same for both modes and is left out: the figures are the job on ready
workers. Reported per run: wall seconds of ``Job.run``, records/s over it, the report's
``driver_busy_s`` and ``driver_us_per_record`` (the driver process's CPU over the job loop,
per record), sharded mode's ``driver_bookkeeping_us_per_record`` (the same less the final
concatenation of the parts), shards, and whether the two outputs are byte-identical (the
default classifier is not batch-invariant: its scores move in the 7th digit with the batch
composition, so its two outputs can differ there).

Jobs: ``echo`` (the no-op callable ``parainfer.testing:echo`` on N VADER texts, cycled: the
driver's cost per record with no model cost) and ``classify`` (the default VADER classifier on
N VADER texts).

Usage:
    python bench/bench_sharded.py --job echo --records 1000000 --rounds 1
    python bench/bench_sharded.py --job classify --records 3000 --rounds 1 --reports R/
    python bench/bench_sharded.py --job echo --records 100000 --format parquet   # csv, parquet output
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
import time
from pathlib import Path

JOBS = {"classify": {"task": "classify", "model": None}, "echo": {"task": "classify", "model": "parainfer.testing:echo"}}


def make_input(records: int, folder: Path) -> Path:
    """``records`` VADER texts (cycled, ids 0..n-1) as JSONL."""
    from parainfer.platform import datasets

    rows = [json.loads(x) for x in datasets.fetch("vader").read_text(encoding="utf-8").splitlines()]
    path = folder / f"vader{records}.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for i, row in zip(range(records), itertools.cycle(rows)):
            f.write(json.dumps({"id": i, "text": row["text"]}) + "\n")
    return path


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--job", choices=sorted(JOBS), default="echo")
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--format", choices=["jsonl", "csv", "parquet"], default="jsonl", help="output format")
    ap.add_argument("--reports", default=None, help="also write each run's report here (for parainfer simulate)")
    args = ap.parse_args()
    from parainfer.config import JobConfig
    from parainfer.batch.job import Job, start_workers, wait_ready
    from parainfer.models.registry import build_predictor

    folder = Path(tempfile.mkdtemp(prefix="bench_sharded_"))
    if args.reports:
        Path(args.reports).mkdir(parents=True, exist_ok=True)
    src = make_input(args.records, folder)
    print(f"input {src} ({src.stat().st_size / 1e6:.1f} MB, {args.records:,} records), {args.format} output; "
          f"load average {load()}")
    spec = JOBS[args.job]
    workers = start_workers(build_predictor(spec["task"], spec["model"]), args.workers)
    wait_ready(workers)
    print("| round | mode | records | wall s | records/s | driver CPU s | driver µs/record | bookkeeping µs/record "
          "| shards | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    try:
        for rnd in range(args.rounds):
            outs = {}
            for mode in ("off", "on"):
                out = folder / f"out-{mode}.{args.format}"
                report = (str(Path(args.reports) / f"{args.job}-{mode}-{rnd}.json") if args.reports else None)
                config = JobConfig(input=str(src), output=str(out), workers=args.workers, quiet=True,
                                   overwrite=True, shard_mode=mode, report=report, **spec)
                t = time.perf_counter()
                rep = Job(config).run(workers)
                wall = time.perf_counter() - t
                outs[mode] = out
                shards = (rep.get("shards") or {}).get("committed", "-")
                book = rep.get("driver_bookkeeping_us_per_record")
                print(f"| {rnd} | {rep['data_path']} | {rep['records']:,} | {wall:.2f} | {rep['records'] / wall:,.0f} | "
                      f"{rep['driver_busy_s']:.3f} | {rep['driver_us_per_record']:.3f} | "
                      f"{'-' if book is None else f'{book:.3f}'} | {shards} | {load()} |", flush=True)
            same = outs["off"].read_bytes() == outs["on"].read_bytes()
            print(f"round {rnd}: outputs byte-identical: {same}")
    finally:
        workers.shutdown()


if __name__ == "__main__":
    main()
