"""A real two-node Ray cluster for the tests of this directory, one network namespace per node.

``ray_cluster`` (session scope) runs ``raycluster.sh up`` once and ``down`` at the end whatever
the outcome; the driver (``parainfer run`` / ``serve``) runs in the head's namespace with the
cluster's token. Node failure detection is shortened (GCS health checks every 0.5 s, dead after
3 misses) so Ray itself notices a lost node in seconds, not the default ~15-65 s;
``cluster_up`` makes one with other settings (``test_ray_node_lost.py``: Ray's defaults;
``test_ray_gcs_restart.py``: ``GCS_FT=1``, the GCS backed by a Redis).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("raycluster.sh")
REPO = Path(__file__).resolve().parents[2]
FAST_HEALTH = {"RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "500",
               "RAY_health_check_failure_threshold": "3", "RAY_health_check_initial_delay_ms": "0"}


@dataclass
class Cluster:
    """A running cluster: where it is, and how to run a driver in it."""

    tag: str
    head_ns: str
    node_ns: str
    address: str
    node_ips: list[str]
    token_path: str
    start_s: float

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The driver's environment: this tree first on PYTHONPATH, the cluster's token."""
        path = os.pathsep.join([str(REPO / "src"), str(REPO)])
        return {**os.environ, "PYTHONPATH": path, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": self.token_path,
                "HF_HUB_OFFLINE": "1", **(extra or {})}

    def command(self, *args: str) -> list[str]:
        """``parainfer ARGS`` as a driver in the head's namespace."""
        return ["ip", "netns", "exec", self.head_ns, sys.executable, "-m", "parainfer.cli", *args]

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(*args), capture_output=True, text=True, env=self.env(env), timeout=timeout,
                              cwd=REPO)

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        return subprocess.Popen(self.command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env(env), cwd=REPO)

    def actor_pids(self, title: bytes = b"ray::RayWorker") -> dict[int, str]:
        """Live actors whose process title starts with ``title`` (default the batch workers,
        ``ray::RayWorker...``): pid -> namespace."""
        found = {}
        for ns in (self.head_ns, self.node_ns):
            out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in map(int, out):
                try:
                    if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(title):
                        found[pid] = ns
                except OSError:
                    pass
        return found

    def wait_actors(self, count: int, timeout: float = 120.0) -> dict[int, str]:
        """Wait until ``count`` worker actors are alive; returns them (fewer after ``timeout``)."""
        deadline = time.monotonic() + timeout
        pids = self.actor_pids()
        while len(pids) < count and time.monotonic() < deadline:
            time.sleep(0.1)
            pids = self.actor_pids()
        return pids

    def kill(self, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)

    def node_down(self) -> None:
        """SIGKILL every process of the second node (raylet, its workers): a machine lost."""
        subprocess.run([str(SCRIPT), "node-down", self.tag], check=True, timeout=60)

    def node_cut(self) -> None:
        """Take the second node off the network (its processes run on, unreachable)."""
        subprocess.run([str(SCRIPT), "node-cut", self.tag], check=True, timeout=60)

    def gcs_kill(self) -> None:
        """SIGKILL the head's GCS server (``raycluster.sh gcs-kill``; the rest of the head runs on)."""
        subprocess.run([str(SCRIPT), "gcs-kill", self.tag], check=True, timeout=60)

    def gcs_restart(self, fresh: bool = False) -> None:
        """Start the killed GCS server again, same command line (``fresh``: without its Redis, a
        new empty cluster); returns once its port answers."""
        env = {**os.environ, "FRESH": "1" if fresh else "0"}
        subprocess.run([str(SCRIPT), "gcs-restart", self.tag], check=True, timeout=60, env=env)

    def node_up(self) -> None:
        """Start the second node again (after ``node_down``), its link up."""
        env = {**os.environ, "RAY": str(Path(sys.executable).with_name("ray"))}
        subprocess.run([str(SCRIPT), "node-up", self.tag], check=True, timeout=120, env=env)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Cluster]:
    """The cluster; PARAINFER_TEST_RAY_TAG=TAG reuses one made by ``raycluster.sh up TAG`` (and
    leaves it up: for working on these tests)."""
    reuse = os.environ.get("PARAINFER_TEST_RAY_TAG")
    with cluster_up(reuse or format(os.getpid(), "x")[-6:], FAST_HEALTH, reuse=bool(reuse)) as cluster:
        yield cluster


@contextmanager
def cluster_up(tag: str, ray_env: dict[str, str], reuse: bool = False) -> Iterator[Cluster]:
    """``raycluster.sh up TAG`` with ``ray_env`` in Ray's environment (e.g. FAST_HEALTH), and
    ``down TAG`` on the way out whatever happens; ``reuse``: TAG is up already (left up)."""
    env = {**os.environ, "RAY": str(Path(sys.executable).with_name("ray")), **ray_env,
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    t0 = time.monotonic()
    try:
        proc = subprocess.run([str(SCRIPT), "info" if reuse else "up", tag], capture_output=True, text=True, env=env,
                              timeout=300, cwd=REPO)
        assert proc.returncode == 0, f"cluster did not start:\n{proc.stdout}\n{proc.stderr}"
        info = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
        yield Cluster(tag, info["HEAD_NS"], info["NODE_NS"], info["ADDRESS"], info["NODE_IPS"].split(","),
                      info["TOKEN_PATH"], time.monotonic() - t0)
    finally:
        if not reuse:
            subprocess.run([str(SCRIPT), "down", tag], timeout=120)
