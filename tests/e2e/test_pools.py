"""Warm worker pools end to end: ``parainfer pool up`` (a real daemon with the built-in embedder
loaded), jobs with ``run --pool`` whose output bytes equal a cold run's and whose start-up
has no model load, ``pool ls``, the slips (exit 2, one line), and ``pool down`` leaving no
process. Every pool is torn down by the fixture."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from parainfer.batch.pools import daemon_alive
from tests.conftest import read_jsonl

POOL = "t1"
OPTIONS = ["--task", "embed", "--dtype", "float32"]
RECORDS = 24  # one task, as 60 were: the bytes and the start-up are the point, not the size


def parainfer(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "parainfer.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def running(pid: int | str) -> bool:
    """True while process ``pid`` exists and is not a zombie (an exited process its parent has
    not reaped: the daemon's parent is whoever adopted it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def gone(pids: list, wait_s: float = 5.0) -> bool:
    """True once none of ``pids`` runs (the forkserver ends just after the daemon)."""
    deadline = time.monotonic() + wait_s
    while any(running(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def one_line(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.fixture(scope="module")
def pool(vader_sample: Path, tmp_path_factory: pytest.TempPathFactory):
    """(env, work folder, pid) of pool ``POOL``: one worker, up for the module, always stopped."""
    work = tmp_path_factory.mktemp("pools")
    env = {**os.environ, "PARAINFER_POOLS_DIR": str(work / "state"), "HF_HUB_OFFLINE": "1"}
    src = work / "in.jsonl"
    src.write_text("".join(vader_sample.read_text().splitlines(keepends=True)[:RECORDS]))
    pid = None
    try:
        up = parainfer(env, "pool", "up", POOL, *OPTIONS, "--workers", "1")
        assert up.returncode == 0, up.stderr
        pid = json.loads((work / "state" / POOL / "pool.json").read_text())["pid"]
        yield env, work, pid
    finally:
        parainfer(env, "pool", "down", POOL)
        if daemon_alive(pid):  # pool down failed: do not leave the daemon behind
            os.killpg(pid, signal.SIGKILL)


def test_runs_on_pool_equal_a_cold_run_without_model_load(pool) -> None:
    env, work, _ = pool
    src = work / "in.jsonl"
    cold = parainfer(env, "run", str(src), "-o", str(work / "cold.jsonl"), *OPTIONS, "--workers", "1", "-q",
                     "--report", str(work / "cold.json"))
    assert cold.returncode == 0, cold.stderr
    for n in (1, 2):
        warm = parainfer(env, "run", str(src), "-o", str(work / f"warm{n}.jsonl"), *OPTIONS, "--pool", POOL, "-q",
                         "--report", str(work / f"warm{n}.json"))
        assert warm.returncode == 0, warm.stderr
        assert sha256(work / f"warm{n}.jsonl") == sha256(work / "cold.jsonl")
    assert len(read_jsonl(work / "warm2.jsonl")) == RECORDS
    cold_report = json.loads((work / "cold.json").read_text())
    warm_report = json.loads((work / "warm2.json").read_text())
    assert "weights_s" in cold_report["startup"] and "worker_process_s" in cold_report["startup"]
    load = {"worker_process_s", "imports_s", "tokenizer_s", "weights_s", "load_other_s", "first_ready_s"}
    assert not load & set(warm_report["startup"]), warm_report["startup"]  # no worker started, no model loaded
    assert warm_report["executor"]["name"] == "pool" and warm_report["executor"]["pool"] == POOL
    assert cold_report["tasks"] == warm_report["tasks"] == 1
    assert warm_report["records"] == RECORDS and warm_report["failed_records"] == 0


def test_pool_ls_lists_the_pool(pool) -> None:
    env, _, pid = pool
    ls = parainfer(env, "pool", "ls")
    assert ls.returncode == 0, ls.stderr
    row = next(line.split() for line in ls.stdout.splitlines() if line.startswith(POOL + " "))
    assert row[1:5] == ["embed", "all-MiniLM-L6-v2", "1", str(pid)] and row[-1] == "up", ls.stdout


def test_slips_are_one_line_exit_2(pool) -> None:
    env, work, pid = pool
    src = str(work / "in.jsonl")
    mismatch = parainfer(env, "run", src, "-o", str(work / "c.jsonl"), "--task", "classify", "--pool", POOL, "-q")
    one_line(mismatch, "holds task=embed")  # names both: what the pool holds and what the job asks
    assert "asks for task=classify" in mismatch.stderr
    one_line(parainfer(env, "pool", "down", "nosuchpool"), "no pool named nosuchpool")
    one_line(parainfer(env, "pool", "up", POOL, *OPTIONS), f"pool {POOL} is already up (pid {pid})")
    one_line(parainfer(env, "pool", "up", "bad", "--model", str(work / "no-such-model")), "unknown model")
    assert not (work / "state" / "bad").exists()


def test_a_pool_whose_daemon_is_gone_is_refused_then_cleared(pool) -> None:
    """A daemon that died (SIGKILL, a reboot) leaves its state with a pid that no longer runs."""
    env, work, _ = pool
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = work / "state" / "stale"
    stale.mkdir(mode=0o700)
    state = json.loads((work / "state" / POOL / "pool.json").read_text())
    (stale / "pool.json").write_text(json.dumps({**state, "name": "stale", "pid": dead.pid}))
    one_line(parainfer(env, "run", str(work / "in.jsonl"), "-o", str(work / "s.jsonl"), *OPTIONS, "--pool", "stale"),
             f"pool stale is gone (pid {dead.pid} is not running)")
    down = parainfer(env, "pool", "down", "stale")
    assert down.returncode == 0 and "already gone" in down.stdout and not stale.exists(), down.stderr


def test_pool_down_leaves_no_process(pool) -> None:
    env, work, pid = pool
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    assert children  # its worker (and the forkserver) run under the daemon
    down = parainfer(env, "pool", "down", POOL)
    assert down.returncode == 0 and f"pid {pid}" in down.stdout, down.stderr
    assert not daemon_alive(pid) and gone([pid, *children]), (pid, children)
    assert not (work / "state" / POOL).exists()
    one_line(parainfer(env, "run", str(work / "in.jsonl"), "-o", str(work / "g.jsonl"), *OPTIONS, "--pool", POOL),
             f"no pool named {POOL}")


def test_a_worker_killed_in_the_pool_is_recovered_by_the_driver(tmp_path: Path) -> None:
    """A pool worker SIGKILLed mid-job: the driver sees WorkerFailed through the pool, requeues
    its tasks and has the pool restart it; every record is written once, in input order."""
    env = {**os.environ, "PARAINFER_POOLS_DIR": str(tmp_path / "state"), "PARAINFER_TEST_MS_PER_TOKEN": "2"}
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": f"record {i} with some words, about forty chars"}) + "\n"
                           for i in range(500)))
    model = ["--task", "classify", "--model", "parainfer.testing:sleepy"]
    pid = None
    try:
        up = parainfer(env, "pool", "up", "s1", *model, "--workers", "2")
        assert up.returncode == 0, up.stderr
        pid = json.loads((tmp_path / "state" / "s1" / "pool.json").read_text())["pid"]
        job = subprocess.Popen([sys.executable, "-m", "parainfer.cli", "run", str(src), "-o", str(tmp_path / "o.jsonl"),
                                *model, "--pool", "s1", "-q", "--report", str(tmp_path / "r.json"),
                                "--checkpoint-every", "0.3"], env=env, stderr=subprocess.PIPE, text=True)
        out, deadline = tmp_path / "o.jsonl", time.monotonic() + 60
        while not (out.exists() and out.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.05)  # the first commit: tasks are running
        workers = [w for c in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
                   for w in subprocess.run(["pgrep", "-P", c], capture_output=True, text=True).stdout.split()]
        assert len(workers) == 2, workers  # the forkserver's two children
        os.kill(int(workers[0]), signal.SIGKILL)
        assert job.wait(timeout=120) == 0, job.stderr.read()
        report = json.loads((tmp_path / "r.json").read_text())
        assert report["restarts"] >= 1, {k: report.get(k) for k in ("restarts", "retries", "wall_s", "per_worker")}
        assert [r["id"] for r in read_jsonl(tmp_path / "o.jsonl")] == list(range(500))
    finally:
        parainfer(env, "pool", "down", "s1")
        if daemon_alive(pid):
            os.killpg(pid, signal.SIGKILL)
