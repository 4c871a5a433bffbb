"""The Ray leg of tests/batch/test_same_bytes.py: ``--executor ray`` (a Ray the job starts for
itself, in a network namespace of its own as in ``test_ray_job_local.py``) writes the same bytes
as one local worker, in record mode and in sharded mode, with the batch-dependent callable."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.batch.test_same_bytes import ENV, HERE, command, run, sha, write_input
from tests.cluster.conftest import REPO
from tests.cluster.test_ray_job_local import bare_namespace  # noqa: F401 - the fixture


def test_ray_writes_the_same_bytes_as_one_local_worker(bare_namespace, tmp_path: Path) -> None:  # noqa: F811
    ns, temp = bare_namespace
    src = write_input(tmp_path / "in.jsonl")
    ref = tmp_path / "ref.jsonl"
    run(command(src, ref, "--workers", "1"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(ENV, PYTHONPATH=os.pathsep.join([str(HERE), str(REPO / "src"), str(REPO)]), RAY_TMPDIR=temp)
    for policy, mode in (("steal", "off"), ("dynamic", "on")):
        out = tmp_path / f"ray-{mode}.jsonl"
        cmd = command(src, out, "--executor", "ray", "--workers", "2", "--cpus-per-worker", "0.5",
                      "--policy", policy, "--shard-mode", mode)
        proc = subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, env=env,
                              timeout=300, cwd=REPO)
        assert proc.returncode in (0, 1), proc.stderr[-3000:]  # 1: the input's unusable rows
        assert sha(out) == sha(ref), f"ray, {policy}, shard mode {mode}"
