"""Elastic workers on a real Ray cluster: ``--workers 1:2`` starts with only the head up (room
for one actor of 1 CPU), grows when the second node joins mid-job (``raycluster.sh node-up``),
and retires that worker when the node is drained (Ray's DrainNode, as a preemption notice
sends it): no record lost or written twice, the output byte-identical to a fixed-size local run.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

from tests.cluster.test_ray_cluster import FAST, write_input
from tests.cluster.test_ray_node_lost import timed_lines

MODEL = ["--model", "tests.cluster.gate_model:gated"]  # 0.5 s a task until the test removes the gate file
DRAIN = """
import sys, time, ray
from ray.core.generated import autoscaler_pb2
ray.init(address=sys.argv[1], log_to_driver=False)
node = next(n for n in ray.nodes() if n["Alive"] and n["NodeManagerAddress"] == sys.argv[2])
ok, why = ray._private.worker.global_worker.gcs_client.drain_node(
    node["NodeID"], autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION"), "test: preempted",
    int(time.time() * 1000) + 120_000)
assert ok, why
"""


def wait_line(lines: list[tuple[float, str]], start: str, timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [line for _, line in lines if line.startswith(start)]
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no stderr line {start!r} within {timeout} s: {lines}")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_workers_1_to_2_grow_when_a_node_joins_and_retire_when_it_is_drained(ray_cluster, tmp_path: Path) -> None:
    head_ip, node_ip = ray_cluster.node_ips
    src = write_input(tmp_path / "in.jsonl", records=4000)  # 250 tasks: 125 s on one worker while gated
    local = subprocess.run([sys.executable, "-m", "parainfer.cli", "run", str(src), "-o", str(tmp_path / "local.jsonl"),
                            *MODEL, "--workers", "2", *FAST], capture_output=True, text=True, timeout=120,
                           env=ray_cluster.env())
    assert local.returncode == 0, local.stderr
    ray_cluster.node_down()  # the head alone (its 1 CPU: room for one worker)
    time.sleep(3.0)  # Ray's shortened health checks declare it dead
    out, report, gate = tmp_path / "o.jsonl", tmp_path / "r.json", tmp_path / "gate"
    gate.touch()
    proc = ray_cluster.start("run", str(src), "-o", str(out), "--report", str(report), *MODEL, "--executor", "ray",
                             "--address", ray_cluster.address, "--workers", "1:2", "--cpus-per-worker", "1", *FAST,
                             env={"PARAINFER_TEST_GATE": str(gate)})
    lines = timed_lines(proc)
    try:
        assert ray_cluster.wait_actors(1) and len(ray_cluster.actor_pids()) == 1
        ray_cluster.node_up()
        joined = wait_line(lines, "worker 1 joined on node ")
        assert joined.startswith(f"worker 1 joined on node {node_ip} (room there): 2 of 2 workers"), joined
        time.sleep(3.0)  # it runs tasks
        drain = subprocess.run(["ip", "netns", "exec", ray_cluster.head_ns, sys.executable, "-c", DRAIN,
                                ray_cluster.address, node_ip], capture_output=True, text=True,
                               env=ray_cluster.env(), timeout=120)
        assert drain.returncode == 0, drain.stderr
        retired = wait_line(lines, "worker 1 retired ")
        assert retired == f"worker 1 retired (node {node_ip} is being drained): 1 of 2 workers", retired
        gate.unlink()  # the rest at full speed on the head
        assert proc.wait(timeout=300) == 0, lines
    finally:
        if proc.poll() is None:
            proc.kill()
        ray_cluster.node_down()  # drained: later tests start it afresh
        ray_cluster.node_up()
    assert sha256(out) == sha256(tmp_path / "local.jsonl")
    rep = json.loads(report.read_text())
    ex = rep["executor"]
    assert rep["failed_records"] == 0 and rep["restarts"] == 0 and rep["retries"] == 0
    assert sum(w["records"] for w in rep["per_worker"]) == 4000 and rep["per_worker"][1]["records"] > 0
    assert ex["min_workers"] == 1 and ex["max_workers"] == 2 and ex["placements"] == [[head_ip], [node_ip]]
    assert [(c["worker"], c["node"], c["event"]) for c in ex["worker_changes"]] == [(1, node_ip, "joined"),
                                                                                   (1, node_ip, "retired")]
    print(f"joined at {ex['worker_changes'][0]['at_s']} s, retired at {ex['worker_changes'][1]['at_s']} s; "
          f"worker 1 ran {rep['per_worker'][1]['records']} records")
