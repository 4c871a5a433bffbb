"""A job cold vs on a warm pool (``parainfer pool up`` / ``run --pool``), alternated in one run.

    python bench/bench_pool.py --records 200 --workers 2 --repeats 3

Starts pool ``bench-pool`` (embed, the built-in embedder, ``--dtype float32``), then runs the
same ``parainfer run`` of the first N VADER texts alternately without (``cold``: its own workers)
and with ``--pool`` (``warm``), and prints each run's whole-command wall time and its start-up
to first dispatch (report ``t_startup_s``, with its parts), then the medians and the ratios
warm / cold. Checks that both give the same output bytes. Stops the pool at the end (always).
Needs the VADER data set (``parainfer datasets fetch vader``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")
POOL = "bench-pool"
OPTIONS = ["--task", "embed", "--dtype", "float32"]


def cli(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "-m", "parainfer.cli", *args], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_once(env: dict[str, str], data: Path, out: Path, extra: list[str]) -> dict:
    """One `parainfer run`; returns its report plus ``command_s`` (wall of the whole command) and
    ``sha256`` of the output."""
    report = out.with_suffix(".report.json")
    t = time.perf_counter()
    cli(env, "run", str(data), "--output", str(out), *OPTIONS, "--report", str(report), "--quiet", "--overwrite",
        *extra)
    r = json.loads(report.read_text())
    r["command_s"] = time.perf_counter() - t
    r["sha256"] = hashlib.sha256(out.read_bytes()).hexdigest()
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_pool_"))
    env = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1", "PARAINFER_POOLS_DIR": str(tmp / "pools")}
    src = Path(subprocess.run([sys.executable, "-m", "parainfer.cli", "datasets", "fetch", "vader"], env=env,
                              check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    data = tmp / "in.jsonl"
    data.write_text("".join(src.read_text(encoding="utf-8").splitlines(keepends=True)[:args.records]))
    t = time.perf_counter()
    cli(env, "pool", "up", POOL, *OPTIONS, "--workers", str(args.workers))
    print(f"pool up: {time.perf_counter() - t:.2f} s ({args.workers} workers)")
    runs: dict[str, list[dict]] = {"cold": [], "warm": []}
    try:
        for i in range(args.repeats):
            for name in ("cold", "warm"):
                extra = ["--pool", POOL] if name == "warm" else ["--workers", str(args.workers)]
                r = run_once(env, data, tmp / f"{name}.jsonl", extra)
                runs[name].append(r)
                print(f"{name} #{i}: command {r['command_s']:.2f} s, start-up to first dispatch "
                      f"{r['t_startup_s']:.3f} s {r['startup']}")
    finally:
        cli(env, "pool", "down", POOL)
    shas = {r["sha256"] for rs in runs.values() for r in rs}
    assert len(shas) == 1, "cold and warm outputs differ"
    med = {n: {k: statistics.median(r[k] for r in rs) for k in ("command_s", "t_startup_s")} for n, rs in runs.items()}
    print(f"\n{'':6}{'command s':>11}{'startup s':>11}   (medians of {args.repeats}; outputs byte-identical)")
    for n in ("cold", "warm"):
        print(f"{n:6}{med[n]['command_s']:>11.2f}{med[n]['t_startup_s']:>11.3f}")
    print(f"warm/cold: command {med['warm']['command_s'] / med['cold']['command_s']:.2f}x, "
          f"start-up {med['warm']['t_startup_s'] / med['cold']['t_startup_s']:.4f}x")


if __name__ == "__main__":
    main()
