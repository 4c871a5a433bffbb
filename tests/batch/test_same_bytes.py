"""Same output bytes whatever runs the job: workers 1/2/3, policy dynamic/steal, record or
sharded mode, a driver SIGKILL then the documented resume, the local or the Ray executor.

The model (``batchmates.batchmates``, a real ``--model module:function`` callable) writes into
every row a fingerprint of the row's whole batch, so a record batched with other records than
the clean run's changes the bytes on any CPU. Every run is the real CLI in a subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
RECORDS = 480
OPTIONS = ["--model", "batchmates:batchmates", "--batch-size", "8", "--bucket-window", "40", "-q",
           "--checkpoint-every", "0.05"]
ENV = {"PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]), "HF_HUB_OFFLINE": "1",
       "PARAINFER_MIN_SHARD_BYTES": "1500", "BATCHMATES_MS_PER_RECORD": "6"}


def write_input(path: Path) -> Path:
    """RECORDS JSONL rows of 1..30 words, with blank lines and unusable rows among them (they
    take input positions, so windows must count them the same way in every mode)."""
    rng = random.Random(7)
    words = ["alpha", "be", "gamma", "delta", "epsilonic", "zeta"]
    with path.open("w") as f:
        for i in range(RECORDS):
            if i % 97 == 13:
                f.write("\n")
            if i % 131 == 50:
                f.write("{not json\n")
                continue
            text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 30)))
            f.write(json.dumps({"id": f"r{i}", "text": text}) + "\n")
    return path


def command(src: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "parainfer.cli", "run", str(src), "-o", str(out), *OPTIONS, *extra]


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env={**os.environ, **ENV})
    assert proc.returncode in (0, 1), proc.stderr  # 1: some rows went to the errors file
    return proc


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def committed(out: Path) -> int:
    """Records the checkpoint next to ``out`` (a file: record mode or sharded) has committed."""
    try:
        return json.loads(Path(str(out) + ".parainfer-checkpoint.json").read_text()).get("records_done", 0)
    except (OSError, ValueError):
        return 0


def kill_driver(cmd: list[str], out: Path, at: int, total: int = RECORDS) -> None:
    """Start the job, SIGKILL the driver once ``at`` records are committed."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **ENV})
    deadline = time.monotonic() + 120
    while proc.poll() is None and committed(out) < at and time.monotonic() < deadline:
        time.sleep(0.01)
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert killed, "the job ended before the kill point; lower it"
    assert 0 < committed(out) < total


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """(input, sha256 of the output and of the errors file) of the clean run: 1 worker, dynamic, records."""
    tmp = tmp_path_factory.mktemp("same-bytes")
    src = write_input(tmp / "in.jsonl")
    out, report = tmp / "ref.jsonl", tmp / "ref.report.json"
    run(command(src, out, "--workers", "1", "--report", str(report)))
    rep = json.loads(report.read_text())
    assert rep["deterministic"] is True and rep["failed_records"] == 4
    sizes = {json.loads(line)["batch_size"] for line in out.read_text().splitlines()}
    assert len(sizes) > 1  # bucketed windows make batches of several sizes: composition is visible
    return src, sha(out), sha(tmp / "ref.errors.jsonl")


KILL = random.Random(2024)
MATRIX = [  # (workers, policy, mode, kill after this many committed records or None)
    (2, "steal", "records", None),
    (3, "dynamic", "sharded", None),
    (1, "steal", "sharded", None),
    (2, "dynamic", "records", KILL.randint(60, 300)),
    (3, "steal", "sharded", KILL.randint(60, 300)),
]


@pytest.mark.parametrize("workers,policy,mode,kill_at", MATRIX)
def test_same_bytes_as_the_clean_run(reference, tmp_path: Path, workers: int, policy: str, mode: str,
                                     kill_at: int | None) -> None:
    src, want_out, want_errors = reference
    out, report = tmp_path / "out.jsonl", tmp_path / "report.json"
    cmd = command(src, out, "--workers", str(workers), "--policy", policy,
                  "--shard-mode", "on" if mode == "sharded" else "off")
    if kill_at is not None:
        kill_driver(cmd, out, kill_at)
    run(cmd + ["--report", str(report)])  # after a kill: the documented resume (the same command)
    assert sha(out) == want_out
    assert sha(tmp_path / "out.errors.jsonl") == want_errors
    rep = json.loads(report.read_text())
    assert rep["deterministic"] is True
    assert (rep["resumed_records"] > 0) == (kill_at is not None)


def test_a_bisected_batch_is_reported_with_its_records(reference, tmp_path: Path) -> None:
    """A record that kills its worker: its batch is bisected, the batch-mates run in other
    batches than planned; the report says so (deterministic false, how many, which ids), in
    both modes, and the records of every other batch are the clean run's."""
    src = tmp_path / "in.jsonl"
    lines = reference[0].read_text().splitlines()
    poison = json.loads(lines[100])
    lines[100] = json.dumps({**poison, "text": poison["text"] + " @@die@@"})
    src.write_text("\n".join(lines) + "\n")
    for mode in ("off", "on"):
        out, report = tmp_path / f"{mode}.jsonl", tmp_path / f"{mode}.json"
        run(command(src, out, "--workers", "2", "--shard-mode", mode, "--max-retries", "0", "--report", str(report)))
        rep = json.loads(report.read_text())
        det = rep["determinism"]
        assert rep["deterministic"] is False and "another batch than planned" in det["why"][0]
        assert 1 < det["rebatched_records"] <= (8 if mode == "off" else 40)  # one batch, or one window
        assert len(det["rebatched_ids"]) == min(20, det["rebatched_records"])  # the first 20 in input order
        assert poison["id"] in det["rebatched_ids"] or det["rebatched_records"] > 20
        assert poison["id"] in (tmp_path / f"{mode}.errors.jsonl").read_text()
        rows = [json.loads(x) for x in out.read_text().splitlines()]
        assert poison["id"] not in {r["id"] for r in rows} and len(rows) == RECORDS - 5


def test_the_built_in_embedder_gives_the_same_bytes_in_both_modes_and_after_a_resume(vader_sample: Path,
                                                                                     tmp_path: Path) -> None:
    """The real default embedder (``--task embed``): record mode, and sharded mode with a driver
    SIGKILL then the resume, write the same bytes; the checkpoint records the numerics. (One
    sharded run, killed and resumed, instead of a clean sharded run plus a killed record-mode
    one: the batchmates matrix above already checks a killed record-mode run byte for byte with
    a model that sees batch composition, and every model load here is seconds of CI.)"""
    src = tmp_path / "in.jsonl"
    src.write_text("".join(vader_sample.read_text().splitlines(keepends=True)[:100]))
    opts = ["--task", "embed", "--batch-size", "8", "--bucket-window", "32", "-q", "--checkpoint-every", "0.05"]

    def cmd(out: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "parainfer.cli", "run", str(src), "-o", str(out), *opts, *extra]

    record, sharded = tmp_path / "record.jsonl", tmp_path / "sharded.jsonl"
    run(cmd(record, "--shard-mode", "off", "--workers", "1"))
    numerics = json.loads(Path(str(record) + ".parainfer-checkpoint.json").read_text())["numerics"]
    assert numerics["dtype"] in ("float32", "bfloat16") and numerics["threads_per_worker"] >= 1
    assert "torch" in numerics["versions"] and "parainfer" in numerics["versions"]
    sharded_cmd = cmd(sharded, "--shard-mode", "on", "--workers", "1")  # 1 worker, several shards (ENV: small ones)
    kill_driver(sharded_cmd, sharded, 30, total=100)
    report = tmp_path / "report.json"
    run(sharded_cmd + ["--report", str(report)])
    assert json.loads(Path(str(sharded) + ".parainfer-checkpoint.json").read_text())["shards"] > 1
    assert sha(record) == sha(sharded)
    rep = json.loads(report.read_text())
    assert rep["deterministic"] is True and rep["resumed_records"] >= 30


def test_a_resume_holds_the_recorded_numerics_or_refuses_in_one_line(tmp_path: Path) -> None:
    """The checkpoint records the libraries' versions and the thread count; a resume under other
    versions is refused (exit 2, one line naming them) unless forced, and then reported not
    deterministic; another ``--threads-per-worker`` is refused."""
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": f"text {i}"}) + "\n" for i in range(40)))
    out, report = tmp_path / "out.jsonl", tmp_path / "report.json"
    cmd = [sys.executable, "-m", "parainfer.cli", "run", str(src), "-o", str(out), "--model", "parainfer.testing:echo",
           "--workers", "1", "-q"]
    assert run(cmd).returncode == 0
    manifest_path = Path(str(out) + ".parainfer-checkpoint.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["numerics"]["threads_per_worker"] >= 1
    manifest["finished"] = False  # a job stopped after its last commit: the rerun resumes
    manifest["numerics"]["versions"]["parainfer"] = "0.0.1"
    manifest_path.write_text(json.dumps(manifest))
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **ENV}, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "parainfer 0.0.1 ->" in proc.stderr
    threads = manifest["numerics"]["threads_per_worker"]
    proc = subprocess.run(cmd + ["--threads-per-worker", str(threads + 1)], capture_output=True, text=True,
                          env={**os.environ, **ENV, "PARAINFER_RESUME_ANY_VERSIONS": "1"}, timeout=120)
    assert proc.returncode == 2 and f"--threads-per-worker {threads}" in proc.stderr, proc.stderr
    proc = subprocess.run(cmd + ["--report", str(report)], capture_output=True, text=True,
                          env={**os.environ, **ENV, "PARAINFER_RESUME_ANY_VERSIONS": "1"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(report.read_text())
    assert rep["deterministic"] is False and "other library versions" in rep["determinism"]["why"][0]
