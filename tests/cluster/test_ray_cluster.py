"""The batch engine on a real two-node Ray cluster (``--executor ray``): the same output, report and
guarantees as on local processes, and the faults of a cluster: a worker actor SIGKILLed, a poison
record, a hung task, the driver SIGKILLed, a whole node lost (last: the node stays down).

Jobs use the cheap callable models of ``parainfer.testing`` (echo, sleepy, crash/hang on a
marker) and, once, the real classifier. Each actor asks for 0.5 CPU so that two fit on one
node of 1 CPU after the other node is lost.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import read_jsonl

MARKER = "@@crash@@"
FAST = ["--batch-size", "16", "--bucket-window", "128", "--checkpoint-every", "0.1", "-q"]
SLEEPY = {"PARAINFER_TEST_MS_PER_TOKEN": "0.06"}  # about 1.5 s of compute per worker for 2,000 records


def write_input(path: Path, records: int = 2000, marked: tuple[int, ...] = (), bad: tuple[int, ...] = ()) -> Path:
    """JSONL ids r0..r{n-1}, texts of 1..40 words (marked ones carry MARKER); ``bad`` lines are not JSON."""
    with path.open("w") as f:
        for i in range(records):
            text = "word " * (1 + (i * 37) % 40) + (MARKER if i in marked else "")
            f.write("{not json\n" if i in bad else json.dumps({"id": f"r{i}", "text": text, "k": i}) + "\n")
    return path


def ray_args(cluster, workers: int = 2) -> list[str]:
    return ["--executor", "ray", "--address", cluster.address, "--workers", str(workers), "--cpus-per-worker", "0.5"]


@pytest.fixture(scope="module")
def job_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_input(tmp_path_factory.mktemp("ray") / "in.jsonl", bad=(100, 900))


@pytest.fixture(scope="module")
def local_output(job_input: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """(output, errors file) of the same job on ONE local worker process."""
    import os
    import subprocess
    import sys

    tmp = tmp_path_factory.mktemp("local")
    proc = subprocess.run([sys.executable, "-m", "parainfer.cli", "run", str(job_input), "-o", str(tmp / "o.jsonl"),
                           "--errors", str(tmp / "e.jsonl"), "--model", "parainfer.testing:sleepy", "--workers", "1",
                           *FAST], capture_output=True, text=True, timeout=120, env={**os.environ, **SLEEPY})
    assert proc.returncode == 1, proc.stderr
    return (tmp / "o.jsonl").read_bytes(), (tmp / "e.jsonl").read_bytes()


def test_two_nodes_same_output_errors_and_report_as_one_local_worker(ray_cluster, job_input, local_output,
                                                                     tmp_path: Path) -> None:
    out, errors, report = tmp_path / "o.jsonl", tmp_path / "e.jsonl", tmp_path / "r.json"
    proc = ray_cluster.run("run", str(job_input), "-o", str(out), "--errors", str(errors), "--report", str(report),
                           "--model", "parainfer.testing:sleepy", *ray_args(ray_cluster), *FAST, env=SLEEPY)
    assert proc.returncode == 1, proc.stderr  # two bad lines
    assert (out.read_bytes(), errors.read_bytes()) == local_output
    rep = json.loads(report.read_text())
    assert rep["records"] == 2000 and rep["failed_records"] == 2 and rep["restarts"] == 0
    assert sum(w["records"] for w in rep["per_worker"]) == 1998 and rep["tasks"] == len(rep["timeline"])
    ex = rep["executor"]
    assert ex["name"] == "ray" and ex["address"] == ray_cluster.address
    assert sorted(n["node"] for n in ex["nodes"]) == sorted(ray_cluster.node_ips)  # one actor per node
    assert [n["workers"] for n in ex["nodes"]] == [1, 1] and sorted(ex["worker_nodes"]) == sorted(ray_cluster.node_ips)
    for _task, _worker, start, end, *_ in rep["timeline"]:  # durations placed on the driver's clock
        assert 0 <= start <= end <= rep["t_parallel_s"] + 1e-3


def test_more_workers_than_the_cluster_has_room_for_is_a_one_line_usage_error(ray_cluster, job_input,
                                                                            tmp_path: Path) -> None:
    proc = ray_cluster.run("run", str(job_input), "-o", str(tmp_path / "o.jsonl"), "--model", "parainfer.testing:echo",
                           "--executor", "ray", "--address", ray_cluster.address, "--workers", "3", "-q")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: 3 workers x 1 CPUs = 3 CPUs, but the Ray cluster at {ray_cluster.address} has 2; use fewer "
        "--workers or a smaller --cpus-per-worker"]


def test_a_3x_straggler_actor_is_absorbed_by_the_dynamic_policy(ray_cluster, tmp_path: Path) -> None:
    """One actor per node, the second 3x slower. Actors start seconds apart on a loaded machine (a
    new Python process each), and a worker that starts late is idle through no fault of the
    policy; so the imbalance is taken over the tasks started once both were running."""
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": "tok " * (2 + (i * 13) % 30)}) + "\n" for i in range(2400)))
    report = tmp_path / "r.json"
    env = {"PARAINFER_TEST_SLOW_WORKER": "1", "PARAINFER_TEST_SLOWDOWN": "3", "PARAINFER_TEST_MS_PER_TOKEN": "0.2"}
    proc = ray_cluster.run("run", str(src), "-o", str(tmp_path / "o.jsonl"), "--report", str(report),
                           "--model", "parainfer.testing:sleepy", "--policy", "dynamic", "--bucket-window", "512",
                           *ray_args(ray_cluster), "--batch-size", "16", "-q", env=env)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(report.read_text())
    both = max(min(t[2] for t in rep["timeline"] if t[1] == w) for w in range(2))
    assert both < 0.5 * rep["t_parallel_s"], "the second actor started too late to measure balance"
    busy = [sum(t[3] - t[2] for t in rep["timeline"] if t[1] == w and t[2] >= both) for w in range(2)]
    assert max(busy) / (sum(busy) / 2) <= 1.10, (busy, both, rep["t_parallel_s"])
    tokens = [sum(t[5] for t in rep["timeline"] if t[1] == w and t[2] >= both) for w in range(2)]
    assert tokens[1] < 0.6 * tokens[0]  # the slow actor was given less work
    assert sorted(rep["executor"]["worker_nodes"]) == sorted(ray_cluster.node_ips)
    assert [r["id"] for r in read_jsonl(tmp_path / "o.jsonl")] == list(range(2400))


def test_worker_actor_sigkilled_mid_job_loses_and_duplicates_nothing(ray_cluster, tmp_path: Path) -> None:
    src = write_input(tmp_path / "in.jsonl")
    out, report = tmp_path / "o.jsonl", tmp_path / "r.json"
    proc = ray_cluster.start("run", str(src), "-o", str(out), "--report", str(report),
                             "--model", "parainfer.testing:sleepy", *ray_args(ray_cluster), *FAST, env=SLEEPY)
    actors = ray_cluster.wait_actors(2)
    assert len(actors) == 2, proc.communicate(timeout=5)
    time.sleep(0.8)
    victim = sorted(actors)[0]
    ray_cluster.kill(victim)
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr
    rep = json.loads(report.read_text())
    assert rep["restarts"] == 1 and rep["failed_records"] == 0, json.dumps(rep["executor"])
    assert sum(w["records"] for w in rep["per_worker"]) == 2000
    rows = read_jsonl(out)
    assert [(r["id"], r["length"]) for r in rows] == [(f"r{i}", len("word " * (1 + (i * 37) % 40)))
                                                      for i in range(2000)]


def test_poison_record_that_kills_its_actor_is_isolated_among_thousands(ray_cluster, tmp_path: Path) -> None:
    src = write_input(tmp_path / "in.jsonl", records=3000, marked=(1234,))
    out, report, errors = tmp_path / "o.jsonl", tmp_path / "r.json", tmp_path / "e.jsonl"
    proc = ray_cluster.run("run", str(src), "-o", str(out), "--report", str(report), "--errors", str(errors),
                           "--model", "parainfer.testing:crash_on_marker", *ray_args(ray_cluster), *FAST,
                           "--batch-size", "16", "--max-retries", "0")
    assert proc.returncode == 1, proc.stderr
    assert [r["id"] for r in read_jsonl(out)] == [f"r{i}" for i in range(3000) if i != 1234]
    (err,) = read_jsonl(errors)
    assert err["id"] == "r1234" and err["line"] == 1235 and "worker died 1 time(s)" in err["reason"]
    assert "ActorDiedError" in err["reason"] or "RayActorError" in err["reason"]
    rep = json.loads(report.read_text())
    # a task that joined several batches goes back as its batches first (one split), then
    # 16 -> 8 -> 4 -> 2 -> 1
    splits = 4 + (rep["most_batches_per_task"] > 1)
    assert rep["failed_records"] == 1 and rep["bisected_tasks"] == splits
    assert rep["restarts"] == splits + 1 and rep["retries"] == splits


def test_hung_task_times_out_its_actor_is_killed_and_the_record_quarantined(ray_cluster, tmp_path: Path) -> None:
    src = write_input(tmp_path / "in.jsonl", records=300, marked=(77,))
    out, report, errors = tmp_path / "o.jsonl", tmp_path / "r.json", tmp_path / "e.jsonl"
    proc = ray_cluster.run("run", str(src), "-o", str(out), "--report", str(report), "--errors", str(errors),
                           "--model", "parainfer.testing:hang_on_marker", *ray_args(ray_cluster), *FAST,
                           "--batch-size", "2", "--max-retries", "0", "--task-timeout", "1")
    assert proc.returncode == 1, proc.stderr
    assert [r["id"] for r in read_jsonl(out)] == [f"r{i}" for i in range(300) if i != 77]
    (err,) = read_jsonl(errors)
    assert err["id"] == "r77" and "timed out after 1 s" in err["reason"]
    rep = json.loads(report.read_text())
    splits = 1 + (rep["most_batches_per_task"] > 1)  # its task's batches, then 2 -> 1
    assert rep["bisected_tasks"] == splits and rep["restarts"] == splits + 1


def test_driver_sigkilled_mid_job_then_rerun_resumes_to_the_uninterrupted_output(ray_cluster, tmp_path: Path) -> None:
    src = write_input(tmp_path / "in.jsonl")
    out, report = tmp_path / "o.jsonl", tmp_path / "r.json"
    args = ("run", str(src), "-o", str(out), "--model", "parainfer.testing:sleepy", *ray_args(ray_cluster), *FAST)
    manifest = Path(str(out) + ".parainfer-checkpoint.json")
    proc = ray_cluster.start(*args, env=SLEEPY)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if manifest.exists() and json.loads(manifest.read_text())["records_done"] > 0:
            break
        time.sleep(0.05)
    actors = ray_cluster.actor_pids()
    proc.send_signal(signal.SIGKILL)  # ip netns exec execs the driver: this pid is the driver
    proc.communicate(timeout=30)
    committed = json.loads(manifest.read_text())["records_done"]
    assert 0 < committed < 2000, "the kill should land between the first commit and the end"
    deadline = time.monotonic() + 60  # Ray kills the actors of a dead driver (their owner)
    while set(actors) & set(ray_cluster.actor_pids()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not set(actors) & set(ray_cluster.actor_pids()), "actors outlived their killed driver"
    resumed = ray_cluster.run(*args, "--report", str(report), env=SLEEPY)
    assert resumed.returncode == 0, resumed.stderr
    rep = json.loads(report.read_text())
    assert rep["resumed_records"] == committed and rep["records"] == 2000 - committed
    assert [(r["id"], r["length"]) for r in read_jsonl(out)] == [(f"r{i}", len("word " * (1 + (i * 37) % 40)))
                                                                 for i in range(2000)]


def test_real_classifier_on_two_nodes_matches_local_processes(ray_cluster, vader_sample: Path, tmp_path: Path) -> None:
    """The default classifier (float32) on 120 VADER texts: the same labels and scores as local processes."""
    import subprocess
    import sys

    src = tmp_path / "in.jsonl"
    src.write_text("".join(vader_sample.read_text(encoding="utf-8").splitlines(keepends=True)[:120]))

    common = ["--batch-size", "32", "--dtype", "float32", "-q"]
    local = subprocess.run([sys.executable, "-m", "parainfer.cli", "run", str(src), "-o",
                            str(tmp_path / "local.jsonl"), "--workers", "2", *common],
                           capture_output=True, text=True, timeout=300)
    assert local.returncode == 0, local.stderr
    proc = ray_cluster.run("run", str(src), "-o", str(tmp_path / "ray.jsonl"), "--report",
                           str(tmp_path / "r.json"), *ray_args(ray_cluster), *common, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got, want = read_jsonl(tmp_path / "ray.jsonl"), read_jsonl(tmp_path / "local.jsonl")
    assert [r["id"] for r in got] == [r["id"] for r in want] and len(got) == 120
    assert [r["label"] for r in got] == [r["label"] for r in want]
    assert max(abs(a["score"] - b["score"]) for a, b in zip(got, want)) < 1e-4
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["model"]["class"] == "HeadClassifierPredictor" and len(rep["executor"]["nodes"]) == 2


def test_serve_on_ray_replica_killed_mid_traffic_is_restarted_without_5xx(ray_cluster, tmp_path: Path) -> None:
    """``parainfer serve --executor ray``: two replica actors (one per node); one is SIGKILLed
    while 4 clients send requests; every request still gets 200 with the right answer, and the
    replica is back (restarted) afterwards."""
    import subprocess

    port = "18612"
    server = ray_cluster.start("serve", "--task", "classify", "--model", "parainfer.testing:echo", "--port", port,
                               "--max-wait-ms", "2", *ray_args(ray_cluster), "--log-level", "warning")
    try:
        client = subprocess.Popen(["ip", "netns", "exec", ray_cluster.head_ns, sys.executable,
                                   str(Path(__file__).with_name("serve_client.py")), f"http://127.0.0.1:{port}", "6"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ray_cluster.env())
        assert client.stdout.readline().strip() == "READY", client.communicate(timeout=30)
        actors = ray_cluster.wait_actors(2)
        time.sleep(1.5)
        ray_cluster.kill(sorted(actors)[0])
        out, err = client.communicate(timeout=120)
        assert client.returncode == 0, err
        result = json.loads(out.strip().splitlines()[-1])
        assert set(result["codes"]) == {"200"} and result["codes"]["200"] > 20, result["codes"]
        assert result["wrong"] == 0
        health = result["health"]
        assert sum(r["restarts"] for r in health["replica_state"]) == 1, health
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=60)


def test_serve_generate_on_ray_two_engine_replicas_one_per_node_agree_and_survive_a_kill(ray_cluster) -> None:
    """``parainfer serve --task generate --executor ray --workers 2``: one engine actor per node;
    12 greedy requests at once (3 prompts x 4, streamed and not, the ``openai`` client) are spread
    over both replicas, and every answer to a prompt is the same text wherever it ran. Then one
    replica actor is SIGKILLed mid-request: its request gets a clean 503, the other's a 200, and
    a fresh actor takes its place."""
    import os
    import subprocess

    port = "18613"
    server = ray_cluster.start("serve", "--task", "generate", "--port", port, "--max-num-seqs", "8",
                               "--threads-per-worker", "1", "--request-timeout-s", "400", *ray_args(ray_cluster),
                               "--log-level", "warning")
    try:
        client = subprocess.Popen(["ip", "netns", "exec", ray_cluster.head_ns, sys.executable,
                                   str(Path(__file__).with_name("generate_client.py")), f"http://127.0.0.1:{port}"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ray_cluster.env())
        assert client.stdout.readline().strip() == "RUNNING", client.communicate(timeout=30)
        victims = [pid for pid in ray_cluster.actor_pids(b"ray::RayReplicaActor")]
        assert len(victims) == 2, victims
        os.kill(min(victims), signal.SIGKILL)
        out, err = client.communicate(timeout=400)
        assert client.returncode == 0, err[-3000:]
        result = json.loads(out.strip().splitlines()[-1])
        for prompt, answers in result["answers"].items():
            assert len({tuple(a) for a in answers}) == 1 and answers[0][0], (prompt, answers)
        assert result["outcomes"] == ["200", "503"], result["outcomes"]
        health = result["health"]
        assert health["executor"] == "ray" and health["replicas_ready"] == 2, health
        state = health["replica_state"]
        assert sum(r["restarts"] for r in state) == 1 and all(r["node"] for r in state), state
        assert sum(r["requests_routed"] for r in state) == 14 and min(r["requests_routed"] for r in state) >= 4
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=60)


def test_zz_node_lost_mid_job_the_job_completes_on_what_remains(ray_cluster, tmp_path: Path) -> None:
    """Last in this module: the second node stays down afterwards."""
    src = write_input(tmp_path / "in.jsonl")
    out, report = tmp_path / "o.jsonl", tmp_path / "r.json"
    proc = ray_cluster.start("run", str(src), "-o", str(out), "--report", str(report),
                             "--model", "parainfer.testing:sleepy", *ray_args(ray_cluster), *FAST,
                             env={"PARAINFER_TEST_MS_PER_TOKEN": "0.15"})
    actors = ray_cluster.wait_actors(2)
    assert sorted(actors.values()) == [ray_cluster.head_ns, ray_cluster.node_ns], proc.communicate(timeout=5)
    time.sleep(1.0)
    ray_cluster.node_down()
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr
    rep = json.loads(report.read_text())
    assert rep["restarts"] == 1 and rep["failed_records"] == 0, json.dumps(rep["executor"])
    assert sum(w["records"] for w in rep["per_worker"]) == 2000
    head_ip, lost_ip = ray_cluster.node_ips
    moved = [p for p in rep["executor"]["placements"] if len(p) == 2]
    assert moved == [[lost_ip, head_ip]]  # the lost node's worker was restarted on the head
    assert rep["executor"]["nodes"] == [{"node": head_ip, "workers": 2}]
    assert [(r["id"], r["length"]) for r in read_jsonl(out)] == [(f"r{i}", len("word " * (1 + (i * 37) % 40)))
                                                                 for i in range(2000)]
