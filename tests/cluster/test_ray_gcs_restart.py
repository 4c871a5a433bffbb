"""The head's GCS killed and restarted mid-job on a real two-node Ray cluster with GCS fault
tolerance (``GCS_FT=1``: the GCS keeps its tables in a Redis in the head's namespace).

What Ray 2.x does, and so what this asserts: the raylets, the actors and the driver wait for the
GCS to come back (``RAY_gcs_rpc_server_reconnect_timeout_s``, default 60 s) and reconnect to the
restarted one, which reloads its tables from Redis; running actors are not touched. So the job
goes on with the same two actors, no restart (the driver says when the GCS went quiet and when it
was back, one line each), and writes exactly what one local worker writes
(sha256).

Then the GCS restarted without its Redis (a new, empty cluster: what a head without GCS fault
tolerance comes back as): the job stops (exit 3 with the line that says to restart the cluster
and rerun; Ray's own abort may beat the driver to it: exit 1), and once the cluster is started
again, the same command resumes from its checkpoint to the local run's bytes.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.conftest import FAST_HEALTH, REPO, SCRIPT, Cluster, cluster_up
from tests.cluster.test_ray_cluster import FAST, write_input

SLOW = {"PARAINFER_TEST_MS_PER_TOKEN": "0.5"}  # about 13 s of compute per worker for 2,000 records
GCS_DOWN_S = 3.0


@pytest.fixture(scope="module")
def ft_cluster() -> Iterator[Cluster]:
    with cluster_up(format(time.monotonic_ns(), "x")[-5:] + "g", {**FAST_HEALTH, "GCS_FT": "1"}) as cluster:
        yield cluster


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def job(ft_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(input, sha256 of what one local worker writes for it): the same 2,000 records for both
    tests, so the local reference run is made once."""
    tmp = tmp_path_factory.mktemp("gcs")
    src, ref = write_input(tmp / "in.jsonl"), tmp / "ref.jsonl"
    local = subprocess.run([sys.executable, "-m", "parainfer.cli", "run", str(src), "-o", str(ref), "--model",
                            "parainfer.testing:sleepy", "--workers", "1", *FAST], capture_output=True, text=True,
                           env=ft_cluster.env(), cwd=REPO, timeout=120)
    assert local.returncode == 0, local.stderr
    return src, sha(ref)


def wait_committed(out: Path, proc, timeout: float = 120.0) -> int:
    """Wait until the job writing ``out`` has committed records (its checkpoint says so): it is
    mid-job, its actors running tasks. Returns the count; fails if the job ends first or none
    is committed within ``timeout``."""
    manifest, deadline = Path(str(out) + ".parainfer-checkpoint.json"), time.monotonic() + timeout
    while True:
        try:
            done = json.loads(manifest.read_text()).get("records_done", 0)
        except (OSError, ValueError):
            done = 0
        if done:
            return done
        assert proc.poll() is None, "the job ended before it committed anything"
        assert time.monotonic() < deadline, f"nothing committed within {timeout} s"
        time.sleep(0.05)


def test_gcs_killed_and_restarted_mid_job_the_job_goes_on_exactly_once(ft_cluster, job, tmp_path: Path) -> None:
    cluster = ft_cluster
    src, want = job
    out, report = tmp_path / "o.jsonl", tmp_path / "r.json"
    args = ("run", str(src), "-o", str(out), "--report", str(report), "--model", "parainfer.testing:sleepy",
            "--executor", "ray", "--address", cluster.address, "--workers", "2", *FAST)
    proc = cluster.start(*args, env=SLOW)
    actors = cluster.wait_actors(2)
    assert sorted(actors.values()) == [cluster.head_ns, cluster.node_ns]
    wait_committed(out, proc)  # mid-job (was a fixed 1 s, which under load could be before any task ran)
    cluster.gcs_kill()
    time.sleep(GCS_DOWN_S)
    assert proc.poll() is None, "the job ended while the GCS was down"
    cluster.gcs_restart()
    assert set(actors) <= set(cluster.actor_pids()), "the actors did not outlive the GCS restart"
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert sha(out) == want
    head = [line for line in err.splitlines() if line.startswith("the Ray head's GCS")]
    assert len(head) == 2, err[-3000:]  # one line when it went quiet, one when it was back
    assert head[0].startswith(f"the Ray head's GCS at {cluster.address} does not answer (connection refused): ")
    assert head[1].startswith(f"the Ray head's GCS at {cluster.address} answers again after "), head
    rep = json.loads(report.read_text())
    assert rep["restarts"] == 0 and rep["failed_records"] == 0


def test_gcs_restarted_without_its_state_stops_the_job_and_a_rerun_resumes(ft_cluster, job, tmp_path: Path) -> None:
    """Last: it starts the cluster again (the fixture tears it down)."""
    cluster = ft_cluster
    src, want = job
    out, report = tmp_path / "o.jsonl", tmp_path / "r.json"
    args = ("run", str(src), "-o", str(out), "--model", "parainfer.testing:sleepy", "--executor", "ray",
            "--address", cluster.address, "--workers", "2", *FAST)
    manifest = Path(str(out) + ".parainfer-checkpoint.json")
    proc = cluster.start(*args, env=SLOW)
    cluster.wait_actors(2)
    wait_committed(out, proc)  # some records committed before the GCS goes: the resume has a prefix to keep
    cluster.gcs_kill()
    time.sleep(GCS_DOWN_S)
    cluster.gcs_restart(fresh=True)
    _, err = proc.communicate(timeout=120)
    print(f"exit {proc.returncode}: {err.rstrip().splitlines()[-1][:160]}")
    assert proc.returncode in (3, 1), err[-3000:]
    assert f"the Ray head's GCS at {cluster.address} does not answer (connection refused): " in err
    if proc.returncode == 3:  # the driver saw the new cluster id before Ray's abort
        assert err.rstrip().splitlines()[-1].startswith(f"error: the Ray head's GCS at {cluster.address} restarted "
                                                        f"without its state"), err[-3000:]
    committed = json.loads(manifest.read_text())["records_done"]
    assert 0 < committed < 2000
    env = {**cluster.env(FAST_HEALTH), "GCS_FT": "1", "RAY": str(Path(sys.executable).with_name("ray"))}
    up = subprocess.run([str(SCRIPT), "up", cluster.tag], capture_output=True, text=True, env=env, timeout=300)
    assert up.returncode == 0, up.stderr
    resumed = cluster.run(*args, "--report", str(report), timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rep = json.loads(report.read_text())
    assert rep["resumed_records"] == committed and rep["records"] == 2000 - committed
    assert sha(out) == want
