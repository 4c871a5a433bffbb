"""A/B of the input reader: CPU seconds to read N JSONL rows through ``open_source``, two source
trees alternating round by round (CPU time, not wall time, so other load on the machine moves
the numbers less).

    python bench/bench_read.py OLD_TREE/src NEW_TREE/src [--rows 1000000] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CODE = ("import sys, time; from parainfer.io.sources import open_source; t = time.process_time(); "
        "n = sum(1 for _ in open_source(sys.argv[1])); print(n, time.process_time() - t)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("trees", nargs=2)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "in.jsonl")
        with open(path, "w") as f:  # the overhead bench's rows: id, 1-40 words, a number
            for i in range(args.rows):
                f.write(json.dumps({"id": f"r{i}", "text": "word " * (1 + (i * 37) % 40), "k": i}) + "\n")
        times: dict[str, list[float]] = {t: [] for t in args.trees}
        for _ in range(args.rounds):
            for tree in args.trees:
                out = subprocess.run([sys.executable, "-c", CODE, path], capture_output=True, text=True, check=True,
                                     env={**os.environ, "PYTHONPATH": tree}).stdout.split()
                times[tree].append(float(out[1]))
    for tree, ts in times.items():
        print(f"{tree}: {' '.join(f'{t:.2f}' for t in ts)} s CPU, mean {sum(ts) / len(ts):.2f}")
    old, new = (sum(times[t]) / len(times[t]) for t in args.trees)
    print(f"new / old: {new / old:.3f}")


if __name__ == "__main__":
    main()
