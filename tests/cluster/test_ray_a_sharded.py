"""Sharded mode (``--shard-mode on``) on the real two-node Ray cluster: actors read their byte
ranges and write their parts themselves (the namespaces share this machine's file system, so
every node sees the input and the output's folder at the same path).

Named to run before ``test_ray_cluster.py``, whose last test leaves the second node down.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from parainfer.executors.ray_shards import PathCheck, SharedPathError, check_paths
from tests.cluster.test_ray_cluster import FAST, SLEEPY, ray_args, write_input
from tests.conftest import read_jsonl

SHARDS = {"PARAINFER_MIN_SHARD_BYTES": "2000"}  # small shards: ~15 records each at the end
ON = ["--shard-mode", "on"]


def lengths(n: int) -> list[tuple[str, int]]:
    return [(f"r{i}", len("word " * (1 + (i * 37) % 40))) for i in range(n)]


def local(src: Path, out: Path, errors: Path, mode: str) -> None:
    """The same job on two local worker processes, sharded or in record mode."""
    proc = subprocess.run([sys.executable, "-m", "parainfer.cli", "run", str(src), "-o", str(out), "--errors",
                           str(errors), "--model", "parainfer.testing:echo", "--workers", "2", *FAST,
                           "--shard-mode", mode], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **SHARDS})
    assert proc.returncode == 1, proc.stderr


def test_sharded_on_two_nodes_gives_the_bytes_of_local_sharded_and_of_record_mode(ray_cluster, tmp_path: Path) -> None:
    src = write_input(tmp_path / "in.jsonl", bad=(100, 900))
    out, errors, report = tmp_path / "o.jsonl", tmp_path / "e.jsonl", tmp_path / "r.json"
    proc = ray_cluster.run("run", str(src), "-o", str(out), "--errors", str(errors), "--report", str(report),
                           "--model", "parainfer.testing:sleepy", *ray_args(ray_cluster), *FAST, *ON,
                           env={**SLEEPY, **SHARDS})
    assert proc.returncode == 1, proc.stderr  # two bad lines
    for mode in ("on", "off"):
        local(src, tmp_path / f"{mode}.jsonl", tmp_path / f"{mode}.e.jsonl", mode)
        assert out.read_bytes() == (tmp_path / f"{mode}.jsonl").read_bytes(), mode
        assert errors.read_bytes() == (tmp_path / f"{mode}.e.jsonl").read_bytes(), mode
    rep = json.loads(report.read_text())
    assert rep["data_path"] == "sharded" and rep["records"] == 2000 and rep["failed_records"] == 2
    assert rep["shards"]["committed"] == rep["shards"]["run"] == len(rep["timeline"]) > 2
    ex = rep["executor"]
    assert ex["name"] == "ray" and sorted(ex["worker_nodes"]) == sorted(ray_cluster.node_ips)  # one actor per node
    for _task, _worker, start, end, *_ in rep["timeline"]:  # durations placed on the driver's clock
        assert 0 <= start <= end <= rep["t_parallel_s"] + 1e-3
    assert not list(tmp_path.glob("o.jsonl.*parts*")), "the parts folder (and its probe file) is left"


def test_actor_sigkilled_mid_sharded_job_every_record_once_in_order(ray_cluster, tmp_path: Path) -> None:
    src = write_input(tmp_path / "in.jsonl")
    out, report = tmp_path / "o.jsonl", tmp_path / "r.json"
    proc = ray_cluster.start("run", str(src), "-o", str(out), "--report", str(report),
                             "--model", "parainfer.testing:sleepy", *ray_args(ray_cluster), *FAST, *ON,
                             env={**SLEEPY, **SHARDS})
    actors = ray_cluster.wait_actors(2)
    assert len(actors) == 2, proc.communicate(timeout=5)
    time.sleep(0.8)
    ray_cluster.kill(sorted(actors)[0])
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr
    rep = json.loads(report.read_text())
    assert rep["restarts"] == 1 and rep["failed_records"] == 0 and rep["records"] == 2000
    assert [(r["id"], r["length"]) for r in read_jsonl(out)] == lengths(2000)


def test_hung_record_is_bisected_out_of_its_shard_by_the_actors_batch_watchdog(ray_cluster, tmp_path: Path) -> None:
    """--task-timeout on Ray in sharded mode: the actor's watchdog SIGKILLs it, the driver reads
    its note (on the shared file system) and bisects the shard until the record is alone."""
    src = write_input(tmp_path / "in.jsonl", records=300, marked=(290,))
    out, report, errors = tmp_path / "o.jsonl", tmp_path / "r.json", tmp_path / "e.jsonl"
    proc = ray_cluster.run("run", str(src), "-o", str(out), "--report", str(report), "--errors", str(errors),
                           "--model", "parainfer.testing:hang_on_marker", *ray_args(ray_cluster), *FAST, *ON,
                           "--max-retries", "0", "--task-timeout", "1", env=SHARDS)
    assert proc.returncode == 1, proc.stderr
    assert [r["id"] for r in read_jsonl(out)] == [f"r{i}" for i in range(300) if i != 290]
    (err,) = read_jsonl(errors)
    assert err["id"] == "r290" and err["line"] == 291 and "timed out after 1 s" in err["reason"]
    rep = json.loads(report.read_text())
    assert rep["data_path"] == "sharded" and rep["failed_records"] == 1 and rep["bisected_shards"] >= 1
    assert rep["restarts"] == rep["bisected_shards"] + 1


def test_driver_sigkilled_mid_sharded_job_then_rerun_resumes_to_the_uninterrupted_output(ray_cluster,
                                                                                        tmp_path: Path) -> None:
    src = write_input(tmp_path / "in.jsonl")
    out, report = tmp_path / "o.jsonl", tmp_path / "r.json"
    args = ("run", str(src), "-o", str(out), "--model", "parainfer.testing:sleepy", *ray_args(ray_cluster), *FAST, *ON)
    manifest = Path(str(out) + ".parainfer-checkpoint.json")
    proc = ray_cluster.start(*args, env={**SLEEPY, **SHARDS})
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if manifest.exists() and json.loads(manifest.read_text())["records_done"] > 0:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # ip netns exec execs the driver: this pid is the driver
    proc.communicate(timeout=30)
    committed = json.loads(manifest.read_text())["records_done"]
    assert 0 < committed < 2000, "the kill should land between the first commit and the end"
    resumed = ray_cluster.run(*args, "--report", str(report), env={**SLEEPY, **SHARDS})
    assert resumed.returncode == 0, resumed.stderr
    rep = json.loads(report.read_text())
    assert rep["data_path"] == "sharded" and rep["resumed_records"] == committed
    assert rep["records"] == 2000 - committed
    assert [(r["id"], r["length"]) for r in read_jsonl(out)] == lengths(2000)


def test_input_a_node_cannot_see_exits_2_naming_the_node_the_path_and_the_fix(ray_cluster, tmp_path: Path) -> None:
    """A path that means another file on each process: ``/proc/self/cwd/...`` is the driver's
    folder for the driver and the actor's working folder for an actor (a node without the file)."""
    write_input(tmp_path / "in.jsonl", records=200)
    out = tmp_path / "o.jsonl"
    proc = subprocess.run(ray_cluster.command("run", "/proc/self/cwd/in.jsonl", "-o", str(out), "--model",
                                              "parainfer.testing:echo", *ray_args(ray_cluster), *FAST, *ON),
                          capture_output=True, text=True, env=ray_cluster.env(SHARDS), cwd=tmp_path, timeout=180)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: node 10.212.") and "'/proc/self/cwd/in.jsonl'" in line, line
    assert "shared file system" in line and "--shard-mode off" in line
    assert not out.exists() and not list(tmp_path.glob(".parainfer-fs-probe-*"))
    assert not ray_cluster.actor_pids()


def test_check_paths_names_a_really_missing_input_a_changed_one_and_another_folder(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("{}\n")
    probe = tmp_path / ".parainfer-fs-probe-1-ab"
    probe.write_text("ab" * 16)
    check = PathCheck(str(src), 3, str(probe), "ab" * 16)
    check_paths(check, "10.0.0.7")  # all there: no error, no file left
    assert sorted(p.name for p in tmp_path.iterdir()) == [probe.name, "in.jsonl"]
    missing = PathCheck(str(tmp_path / "nowhere" / "in.jsonl"), 3, str(probe), "ab" * 16)
    with pytest.raises(SharedPathError, match=r"node 10\.0\.0\.7 cannot see '.*/nowhere/in\.jsonl' .*No such file"):
        check_paths(missing, "10.0.0.7")
    with pytest.raises(SharedPathError, match="input file of 3 bytes there, 4 on the driver"):
        check_paths(PathCheck(str(src), 4, str(probe), "ab" * 16), "10.0.0.7")
    with pytest.raises(SharedPathError, match="another folder of that name.*--shard-mode off"):
        check_paths(PathCheck(str(src), 3, str(probe), "cd" * 16), "10.0.0.7")
    with pytest.raises(SharedPathError, match="probe file is not there"):
        check_paths(PathCheck(str(src), 3, str(tmp_path / "gone" / probe.name), "ab" * 16), "10.0.0.7")

