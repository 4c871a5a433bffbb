"""Sharded mode vs record mode on the two-node Ray cluster, in one run: the driver's cost per record.

The no-op callable ``parainfer.testing:echo`` on N JSONL records (default 200,000), 2 actors (one
per node of the tests' namespace cluster, tests/cluster/raycluster.sh, 1 CPU each), once with
``--shard-mode off`` (every record through the driver) and once with ``--shard-mode on`` (the
actors read their byte ranges and write their parts; the namespaces share this machine's file
system). Both outputs must be byte-identical. Prints a markdown table: the driver's CPU per
record, records/s in the parallel phase and overall, and the load average at start and end.

Usage: python bench/bench_ray_sharded.py [--records 200000]  (needs root: network namespaces)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ray import cluster, run_job  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000)
    opts = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_ray_sharded"))
    src = tmp / "in.jsonl"
    with src.open("w") as f:
        for i in range(opts.records):
            f.write(json.dumps({"id": f"r{i}", "text": "word " * (1 + (i * 37) % 40)}) + "\n")
    load0 = os.getloadavg()
    info = cluster("up")
    try:
        reps = [run_job(f"ray {mode}", [str(src), "--model", "parainfer.testing:echo", "--workers", "2",
                                        "--shard-mode", mode], info, tmp) for mode in ("off", "on")]
    finally:
        cluster("down")
    load1 = os.getloadavg()
    same = Path(reps[0]["out"]).read_bytes() == Path(reps[1]["out"]).read_bytes()
    print(f"{opts.records:,} records, {src.stat().st_size / 2**20:.1f} MiB; outputs identical: {same}; "
          f"load average {load0[0]:.2f} at start, {load1[0]:.2f} at end")
    print("| mode | data path | driver CPU s | driver us/record | parallel rec/s | overall rec/s | wall s "
          "| shards/tasks |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for rep in reps:
        units = rep.get("shards", {}).get("run", rep["tasks"])
        print(f"| {rep['label']} | {rep.get('data_path', 'records')} | {rep['driver_busy_s']:.2f} | "
              f"{rep['driver_us_per_record']:.2f} | {rep['parallel_throughput_records_per_s']:,.0f} | "
              f"{rep['throughput_records_per_s']:,.0f} | {rep['wall_s']:.1f} | {units} |")
    ratio = reps[0]["driver_us_per_record"] / reps[1]["driver_us_per_record"]
    print(f"ratio record/sharded driver us/record: {ratio:.1f}x")
    if not same:
        raise SystemExit("outputs differ")


if __name__ == "__main__":
    main()
