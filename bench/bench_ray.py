"""parainfer on Ray against the local executor and a Ray Data peer, all in one run.

1. The same VADER classify job (2 workers, default model) with ``--executor local``, with
   ``--executor ray`` on a one-node cluster, and on a two-node cluster (the second node added to
   the same cluster); then the Ray Data peer (``raydata_peer.py``: ``map_batches``, actor pool
   of 2, ``preserve_order=True``) on the two nodes.
2. Engine overhead: the no-op callable ``parainfer.testing:echo``, 20,000 records in tasks of
   16 (1,250 tasks), local vs ray (two nodes): records/s and tasks/s.

The cluster is the tests' one (tests/cluster/raycluster.sh: network namespaces, needs root);
each node has RAY_CPUS=2 logical CPUs so two 1-CPU actors fit on one node. Prints a markdown
table (throughput in the parallel phase and overall, start-up, ratio to local).

Usage: python bench/bench_ray.py [--limit 3000] [--noop 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "cluster" / "raycluster.sh"
TAG = "bench"


def cluster(cmd: str, **env: str) -> dict[str, str]:
    """raycluster.sh CMD bench (tried twice: a loaded machine can miss Ray's start-up deadlines)."""
    for attempt in (1, 2):
        proc = subprocess.run([str(SCRIPT), cmd, TAG], capture_output=True, text=True,
                              env={**os.environ, "RAY": str(Path(sys.executable).with_name("ray")), **env})
        if proc.returncode == 0:
            return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
        print(f"raycluster.sh {cmd} failed (attempt {attempt}):\n{proc.stdout}\n{proc.stderr}", file=sys.stderr)
    raise SystemExit(1)


def run_job(label: str, args: list[str], info: dict[str, str] | None, tmp: Path) -> dict:
    """One ``parainfer run`` (in the head's namespace when ``info``); returns its report + label."""
    report = tmp / f"{label}.json".replace(" ", "_")
    cmd = [sys.executable, "-m", "parainfer.cli", "run", *args, "-o", str(report) + ".out.jsonl", "--overwrite",
           "--report", str(report), "-q"]
    env = dict(os.environ)
    if info:
        cmd = ["ip", "netns", "exec", info["HEAD_NS"], *cmd, "--executor", "ray", "--address", info["ADDRESS"],
               "--cpus-per-worker", "1"]
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=info["TOKEN_PATH"])
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=REPO)
    rep = json.loads(report.read_text())
    rep["label"], rep["command_s"] = label, time.perf_counter() - t0
    rep["out"] = str(report) + ".out.jsonl"
    print(f"{label}: {rep['parallel_throughput_records_per_s']:.1f} rec/s parallel, wall {rep['wall_s']:.1f} s",
          file=sys.stderr)
    return rep


def row(rep: dict, base: dict) -> str:
    tasks_s = rep["tasks"] / rep["t_parallel_s"] if rep["t_parallel_s"] else 0.0
    ratio = rep["parallel_throughput_records_per_s"] / base["parallel_throughput_records_per_s"]
    nodes = len((rep.get("executor") or {}).get("nodes") or [1])
    return (f"| {rep['label']} | {nodes} | {rep['t_startup_s']:.1f} | {rep['t_parallel_s']:.2f} | "
            f"{rep['parallel_throughput_records_per_s']:,.0f} | {tasks_s:,.0f} | {rep['throughput_records_per_s']:,.0f} | "
            f"{ratio:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=3000, help="VADER texts")
    ap.add_argument("--noop", type=int, default=20000, help="records of the no-op job")
    opts = ap.parse_args()
    from parainfer.platform import datasets

    tmp = Path(tempfile.mkdtemp(prefix="bench_ray"))
    vader = tmp / "vader.jsonl"
    vader.write_text("".join(datasets.fetch("vader").read_text(encoding="utf-8").splitlines(keepends=True)[:opts.limit]))
    noop = tmp / "noop.jsonl"
    noop.write_text("".join(json.dumps({"id": i, "text": "w " * (1 + i % 30)}) + "\n" for i in range(opts.noop)))
    classify = [str(vader), "--workers", "2"]
    echo = [str(noop), "--workers", "2", "--model", "parainfer.testing:echo", "--batch-size", "16"]
    print(f"load before: {os.getloadavg()}", file=sys.stderr)
    reps = [run_job("classify local", classify, None, tmp), run_job("no-op local", echo, None, tmp)]
    try:
        t0 = time.perf_counter()
        info = cluster("up", NODES="1", RAY_CPUS="2")
        head_s = time.perf_counter() - t0
        reps.append(run_job("classify ray 1 node", classify, info, tmp))
        t0 = time.perf_counter()
        cluster("node-up", RAY_CPUS="2")
        node_s = time.perf_counter() - t0
        reps.append(run_job("classify ray 2 nodes", classify, info, tmp))
        reps.append(run_job("no-op ray 2 nodes", echo, info, tmp))
        peer_out = tmp / "peer.json"
        subprocess.run(["ip", "netns", "exec", info["HEAD_NS"], sys.executable, str(REPO / "bench" / "raydata_peer.py"),
                        info["ADDRESS"], str(vader), str(peer_out)], check=True, cwd=REPO,
                       env={**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": info["TOKEN_PATH"]})
    finally:
        cluster("down")
    peer = json.loads(peer_out.read_text())
    print(f"load after: {os.getloadavg()}; cluster start: head {head_s:.1f} s, second node {node_s:.1f} s")
    print("| job | nodes | start-up s | parallel s | records/s (parallel) | tasks/s (parallel) | records/s (overall) "
          "| ratio to local (parallel) |")
    print("|---|---|---|---|---|---|---|---|")
    by = {r["label"]: r for r in reps}
    for rep in reps:
        print(row(rep, by["no-op local" if rep["label"].startswith("no-op") else "classify local"]))
    ours = by["classify ray 2 nodes"]
    labels = [json.loads(line)["label"] for line in open(ours["out"], encoding="utf-8")]
    agree = sum(a == b for a, b in zip(labels, peer["labels"])) / max(1, len(labels))
    print(f"\nRay Data peer (2 nodes, map_batches, actor pool 2, preserve_order=True): {peer['records']} texts in "
          f"{peer['wall_s']:.1f} s = {peer['records'] / peer['wall_s']:.1f} texts/s overall (start included); "
          f"in input order: {peer['in_order']}; labels agreeing with parainfer's: {agree:.4f}. parainfer on Ray "
          f"(2 nodes): {ours['records'] / ours['command_s']:.1f} texts/s for the whole command (start included) = "
          f"{ours['records'] / ours['command_s'] / (peer['records'] / peer['wall_s']):.2f}x the peer.")


if __name__ == "__main__":
    main()
