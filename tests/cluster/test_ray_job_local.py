"""``--executor ray`` with no cluster named (no ``--address``, no ``RAY_ADDRESS``): the command
starts a Ray of its own for the job, runs on it, and stops it when the job ends.

It runs in a network namespace of its own (``raycluster.sh`` with ``NODES=0``: the namespaces
and their private network, no Ray started), since Ray will not put a node on the host's
loopback here; Ray's session files go under the namespace's temp folder (``RAY_TMPDIR``), which
``raycluster.sh down`` deletes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.conftest import REPO, SCRIPT
from tests.cluster.test_ray_cluster import write_input


@pytest.fixture
def bare_namespace():
    """(namespace, its temp folder): a namespace with a private network and nothing running."""
    tag = "j" + format(os.getpid(), "x")[-5:]
    proc = subprocess.run([str(SCRIPT), "up", tag], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "NODES": "0"})
    assert proc.returncode == 0, proc.stderr
    info = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    try:
        yield info["HEAD_NS"], info["TEMP"]
    finally:
        subprocess.run([str(SCRIPT), "down", tag], timeout=120)


def test_a_job_without_a_cluster_starts_its_own_ray_and_stops_it(bare_namespace, tmp_path: Path) -> None:
    ns, temp = bare_namespace
    src = write_input(tmp_path / "in.jsonl", records=400)
    out, report = tmp_path / "o.jsonl", tmp_path / "r.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]), HF_HUB_OFFLINE="1", RAY_TMPDIR=temp)
    proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "parainfer.cli", "run", str(src),
                           "-o", str(out), "--report", str(report), "--model", "parainfer.testing:echo",
                           "--executor", "ray", "--workers", "2", "--cpus-per-worker", "0.5", "--batch-size", "16",
                           "-q"], capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(400)]  # in order, exactly once
    rep = json.loads(report.read_text())
    ex = rep["executor"]
    assert ex["name"] == "ray" and ex["address"] == "local", ex
    assert sum(w["records"] for w in rep["per_worker"]) == 400 and len(rep["per_worker"]) == 2
    leftover = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
    assert leftover == [], f"the job's own Ray was left running: {leftover}"
