"""How ``--executor ray`` finds (or starts) its Ray, as a user meets it on one machine.

* A Ray already runs on the machine (``ray start --head``, its address in Ray's
  ``ray_current_cluster`` file) and the job names no cluster: it must start a Ray of its own, not
  attach to that one (``ray.init(num_cpus=...)`` used to, and crashed with a ValueError), and
  leave the other Ray running.
* ``--address`` where no head listens: one line and exit 2 in seconds, not Ray's minutes of
  "Failed to connect to GCS".
* a head with token authentication and a driver with a wrong token (or none): one line naming
  ``RAY_AUTH_TOKEN_PATH`` and exit 2, without Ray's ~20 s of InvalidAuthToken warnings.

One ``raycluster.sh`` cluster with ``NODES=1`` (a token-authenticated head in the first
namespace, nothing in the second); everything runs inside those namespaces.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cluster.conftest import REPO, SCRIPT
from tests.cluster.test_ray_cluster import write_input

BOUND_S = 30.0  # a dead head or a wrong token must fail within this


@pytest.fixture(scope="module")
def head() -> dict[str, str]:
    """raycluster.sh's KEY=VALUE lines of a one-node cluster (HEAD_NS, NODE_NS, ADDRESS, ...)."""
    tag = "c" + format(os.getpid(), "x")[-5:]
    env = {**os.environ, "NODES": "1", "RAY": str(Path(sys.executable).with_name("ray"))}
    try:
        proc = subprocess.run([str(SCRIPT), "up", tag], capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        yield dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    finally:
        subprocess.run([str(SCRIPT), "down", tag], timeout=120)


def driver(ns: str, args: list[str], env: dict[str, str], timeout: float = 300) -> tuple[subprocess.CompletedProcess,
                                                                                       float]:
    """``parainfer ARGS`` in namespace ``ns`` with only ``env``'s RAY_* variables; (process, seconds)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    full.update(PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]), HF_HUB_OFFLINE="1", **env)
    t0 = time.monotonic()
    proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "parainfer.cli", *args],
                          capture_output=True, text=True, env=full, timeout=timeout, cwd=REPO)
    return proc, time.monotonic() - t0


def job(src: Path, out: Path, *extra: str) -> list[str]:
    return ["run", str(src), "-o", str(out), "--model", "parainfer.testing:echo", "--executor", "ray",
            "--workers", "1", "--cpus-per-worker", "0.5", "-q", *extra]


def ns_pids(ns: str) -> set[int]:
    return set(map(int, subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()))


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The stderr of a failed job: exactly one line, ``error: ...`` (no traceback, no Ray warnings)."""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    return lines[0]


def test_without_address_a_job_starts_its_own_ray_beside_one_already_running(head, tmp_path: Path) -> None:
    ns, ip = head["NODE_NS"], head["NODE_IPS"].split(",")[1]
    temp = Path(head["TEMP"]) / "other"
    temp.mkdir()
    ray_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": head["TOKEN_PATH"], "RAY_TMPDIR": str(temp)}
    # A user's `ray start --head` with Ray's defaults (its address goes to $RAY_TMPDIR/ray/ray_current_cluster).
    started = subprocess.run(["ip", "netns", "exec", ns, "env", *(f"{k}={v}" for k, v in ray_env.items()),
                              str(Path(sys.executable).with_name("ray")), "start", "--head", "--node-ip-address", ip,
                              "--port", "6379", "--num-cpus", "1", "--include-dashboard", "false",
                              "--disable-usage-stats"], capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stdout + started.stderr
    address_file = temp / "ray" / "ray_current_cluster"
    assert address_file.read_text().strip() == f"{ip}:6379"  # ray.init() with no address would attach to it
    before = ns_pids(ns)

    src = write_input(tmp_path / "in.jsonl", records=300)
    out, report = tmp_path / "o.jsonl", tmp_path / "r.json"
    proc, _ = driver(ns, job(src, out, "--report", str(report), "--batch-size", "16"), ray_env)

    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [f"r{i}" for i in range(300)]
    assert json.loads(report.read_text())["executor"]["address"] == "local"
    # The other Ray is untouched: all its processes alive, nothing of the job's own Ray left.
    assert ns_pids(ns) == before
    assert address_file.read_text().strip() == f"{ip}:6379"
    probe = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c",
                            f"import socket; socket.create_connection(('{ip}', 6379), 5).close()"], timeout=30)
    assert probe.returncode == 0, "the Ray that was running before the job no longer answers"


@pytest.mark.parametrize("where", ["refused", "no host"])
def test_an_address_where_no_head_listens_fails_fast_with_one_line(head, where: str, tmp_path: Path) -> None:
    ips = head["NODE_IPS"].split(",")
    # "refused": a port of the second namespace where nothing listens; "no host": an address of
    # the namespaces' network that no namespace holds.
    address = f"{ips[1]}:6399" if where == "refused" else ips[0].rsplit(".", 1)[0] + ".77:6379"
    src = write_input(tmp_path / "in.jsonl", records=10)
    proc, took = driver(head["HEAD_NS"], job(src, tmp_path / "o.jsonl", "--address", address),
                        {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": head["TOKEN_PATH"]}, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = one_error_line(proc)
    assert line.startswith(f"error: cannot reach the Ray head at {address}: ") and "ray start --head" in line, line
    assert ("connection refused" if where == "refused" else "no route to host") in line, line
    assert took < BOUND_S, f"took {took:.1f} s"


@pytest.mark.parametrize("token", ["wrong", "none"])
def test_a_head_that_refuses_the_token_fails_fast_naming_the_token(head, token: str, tmp_path: Path) -> None:
    env = {}
    if token == "wrong":
        bad = tmp_path / "auth_token"
        bad.write_text("0" * 64)
        env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(bad)}
    src = write_input(tmp_path / "in.jsonl", records=10)
    address = head["ADDRESS"]
    proc, took = driver(head["HEAD_NS"], job(src, tmp_path / "o.jsonl", "--address", address), env, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = one_error_line(proc)  # none of Ray's InvalidAuthToken warnings
    assert line.startswith(f"error: the Ray cluster at {address} refused this driver's token: "), line
    assert "RAY_AUTH_TOKEN_PATH" in line and '"Token"' in line, line
    assert ("RAY_AUTH_MODE=token" in line) == (token == "none"), line
    assert took < BOUND_S, f"took {took:.1f} s"
    out = tmp_path / "o.jsonl"
    assert not out.exists() or out.read_text() == ""  # no record ran


def test_a_token_path_that_does_not_exist_is_named(head, tmp_path: Path) -> None:
    src = write_input(tmp_path / "in.jsonl", records=10)
    missing = tmp_path / "no_such_token"
    proc, took = driver(head["HEAD_NS"], job(src, tmp_path / "o.jsonl", "--address", head["ADDRESS"]),
                        {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(missing)}, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = one_error_line(proc)
    assert f"RAY_AUTH_TOKEN_PATH={str(missing)!r} cannot be read" in line, line
    assert took < BOUND_S, f"took {took:.1f} s"


def test_serve_with_an_address_where_no_head_listens_exits_2_before_starting(head) -> None:
    address = head["NODE_IPS"].split(",")[1] + ":6399"
    args = ["serve", "--task", "classify", "--model", "parainfer.testing:echo", "--port", "18123", "--workers", "1",
            "--executor", "ray", "--address", address, "--log-level", "warning"]
    proc, took = driver(head["HEAD_NS"], args, {}, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = one_error_line(proc)  # not uvicorn's "Application startup failed" with a traceback
    assert line == (f"error: cannot reach the Ray head at {address}: connection refused; is `ray start --head` "
                    "running there? (docs/cluster.md)"), line
    assert took < 2 * BOUND_S, f"took {took:.1f} s"  # the server's imports take most of it
