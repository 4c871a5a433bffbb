"""A worker whose driver died before the worker could ask the kernel for the parent-death
signal (the fork-to-prctl window, widened here to a second) exits on its own instead of
waiting for tasks forever with the driver's stderr open."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

DRIVER = textwrap.dedent("""
    import multiprocessing as mp, os, signal, sys, time

    def child(pid_file):
        open(pid_file, "w").write(str(os.getpid()))
        time.sleep(1.0)  # the driver dies in here: before enter_worker_process
        from parainfer.executors.worker_env import enter_worker_process
        enter_worker_process(0, 1, {"PARAINFER_DIE_WITH_PARENT": "1"})
        time.sleep(30)  # a worker that missed its driver's death would wait here for tasks

    if __name__ == "__main__":
        ctx = mp.get_context(sys.argv[2])
        ctx.Process(target=child, args=(sys.argv[1],)).start()
        while not os.path.exists(sys.argv[1]) or not open(sys.argv[1]).read():
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGKILL)
""")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_worker_started_as_its_driver_dies_exits(tmp_path: Path) -> None:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    for method in ("forkserver", "spawn"):
        pid_file = tmp_path / f"{method}.pid"
        with (tmp_path / f"{method}.err").open("w") as err:  # a file: a pipe would wait for the worker
            proc = subprocess.run([sys.executable, str(script), str(pid_file), method], stdout=subprocess.DEVNULL,
                                  stderr=err, timeout=60, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        assert proc.returncode == -9, (tmp_path / f"{method}.err").read_text()
        pid = int(pid_file.read_text())
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid), f"{method} worker {pid} outlived its driver"
