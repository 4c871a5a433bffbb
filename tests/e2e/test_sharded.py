"""Sharded mode end to end: the same output bytes as record mode for every input format and every
output format (JSONL, CSV, Parquet; a batch that raises fails record by record inside its shard),
a killed driver resumes byte-identically, and a record that kills its worker is bisected out of
its shard into the errors file. Folder outputs, --task-timeout: tests/e2e/test_sharded_outputs.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from parainfer.config import JobConfig
from parainfer.batch.job import Job, start_workers, wait_ready
from parainfer.models.registry import build_predictor
from tests.io.test_shards import inputs, rows  # noqa: F401 - the module fixture of four input files

MODEL = "parainfer.testing:raise_on_marker"  # echo, but a batch holding the marker raises
MARKER = "@@crash@@"
SMALL_SHARDS = {"PARAINFER_MIN_SHARD_BYTES": "2000", "PARAINFER_MIN_SHARD_ROWS": "100"}


@pytest.fixture(scope="module")
def workers():
    """Two echo-like workers shared by the in-process jobs of this module."""
    pool = start_workers(build_predictor("classify", MODEL), 2, 1)
    wait_ready(pool, timeout_s=120)
    yield pool
    pool.shutdown()


@pytest.fixture(scope="module")
def marked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = rows(1200)
    for i in (3, 400, 1199):
        data[i]["text"] += MARKER
    path = tmp_path_factory.mktemp("marked") / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
    return path


def run_job(workers, src: Path, out: Path, mode: str) -> dict:
    config = JobConfig(input=str(src), output=str(out), model=MODEL, workers=2, batch_size=16,
                       bucket_window=64, shard_mode=mode, quiet=True)
    return Job(config).run(workers)


@pytest.mark.parametrize("out_ext", ["jsonl", "csv", "parquet"])
@pytest.mark.parametrize("ext", ["jsonl", "csv", "txt", "parquet", "jsonl-noid"])
def test_sharded_output_is_record_mode_output(ext: str, out_ext: str, inputs, workers, tmp_path: Path,  # noqa: F811
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in SMALL_SHARDS.items():
        monkeypatch.setenv(k, v)
    src = inputs[ext]
    rec = run_job(workers, src, tmp_path / f"rec.{out_ext}", "off")
    sh = run_job(workers, src, tmp_path / f"sh.{out_ext}", "on")
    assert (rec["data_path"], sh["data_path"]) == ("records", "sharded")
    assert sh["shards"]["committed"] > 4
    assert (tmp_path / f"sh.{out_ext}").read_bytes() == (tmp_path / f"rec.{out_ext}").read_bytes()
    assert (tmp_path / "sh.errors.jsonl").read_bytes() == (tmp_path / "rec.errors.jsonl").read_bytes()
    assert sh["failed_records"] == rec["failed_records"] > 0
    assert sh["records"] == rec["records"]
    assert not Path(str(tmp_path / f"sh.{out_ext}") + ".parainfer-shards").exists()  # parts removed at the end
    if out_ext == "csv":  # one header line, first
        assert (tmp_path / "sh.csv").read_text().count("id,text,") == 1
    if out_ext == "parquet":
        assert pq.read_table(tmp_path / "sh.parquet").num_rows == sh["records"] - sh["failed_records"]


def test_a_raising_record_fails_alone_inside_its_shard(marked: Path, workers, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in SMALL_SHARDS.items():
        monkeypatch.setenv(k, v)
    rep = run_job(workers, marked, tmp_path / "out.jsonl", "on")
    errors = [json.loads(x) for x in (tmp_path / "out.errors.jsonl").read_text().splitlines()]
    poisoned = [e["id"] for e in errors if "poison record" in e["reason"]]
    assert poisoned == ["r3", "r400", "r1199"]
    out_ids = [json.loads(x)["id"] for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(out_ids) + len(errors) == 1200 == rep["records"]  # every record exactly once
    assert out_ids == sorted(out_ids, key=lambda s: int(s[1:]))  # in input order
    # the timeline's shards carry their failed records (the HTML report colours those red)
    assert sum(r[8] for r in rep["timeline"]) == len(errors) and not any(r[7] for r in rep["timeline"])


def cli(src: Path, out: Path | str, model: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "parainfer.cli", "run", str(src), "-o", str(out), "--model", model,
            "--workers", "2", "--batch-size", "16", "--bucket-window", "64", "--shard-mode", "on",
            "--checkpoint-every", "0.1", "-q", *extra]


def folder_bytes(folder: Path) -> bytes:
    """The parts of a finished output folder joined in the manifest's order."""
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["finished"] and manifest["parts"] == sorted(manifest["parts"])  # names sort in input order
    assert sorted(p.name for p in folder.iterdir()) == sorted(manifest["parts"] + ["manifest.json"])
    return b"".join((folder / name).read_bytes() for name in manifest["parts"])


@pytest.mark.parametrize("out_name", ["out.jsonl", "out.csv", "out.parquet", "parts/"])
def test_killed_driver_resumes_byte_identical(out_name: str, inputs, workers, tmp_path: Path) -> None:  # noqa: F811
    src = inputs["jsonl"]
    folder = out_name.endswith("/")
    ext = ".jsonl" if folder else Path(out_name).suffix
    expected = tmp_path / f"clean{ext}"
    run_job(workers, src, expected, "off")  # an uninterrupted run (record mode: the same bytes)
    env = {**os.environ, **SMALL_SHARDS, "PARAINFER_TEST_MS_PER_TOKEN": "0.15"}
    out = Path(f"{tmp_path}/{out_name}")
    manifest = out / "manifest.json" if folder else Path(str(out) + ".parainfer-checkpoint.json")
    proc = subprocess.Popen(cli(src, f"{tmp_path}/{out_name}", "parainfer.testing:sleepy"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.exists() and json.loads(manifest.read_text()).get("committed"):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # mid-job: some shards committed, others running
    proc.wait(timeout=30)
    committed = json.loads(manifest.read_text())
    assert not committed["finished"] and committed["records_done"] > 0
    report = tmp_path / "report.json"
    args = cli(src, f"{tmp_path}/{out_name}", "parainfer.testing:sleepy", "--report", str(report))
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr  # 1: the input's unusable rows are in the errors file
    assert (folder_bytes(out) if folder else out.read_bytes()) == expected.read_bytes()
    errors = tmp_path / ("parts.errors.jsonl" if folder else "out.errors.jsonl")
    assert errors.read_bytes() == (tmp_path / "clean.errors.jsonl").read_bytes()
    rep = json.loads(report.read_text())
    assert rep["data_path"] == "sharded" and rep["resumed_records"] == committed["records_done"]
    total = sum(1 for line in src.read_bytes().splitlines() if line.strip())
    assert rep["records"] == total - committed["records_done"]  # committed shards were not read again
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert "is already complete" in again.stderr, again.stderr  # verified, nothing run


def test_a_record_that_kills_its_worker_is_bisected_out(tmp_path: Path) -> None:
    data = rows(300)
    data[290]["text"] += MARKER  # in one of the last, small shards
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
    out, report = tmp_path / "out.jsonl", tmp_path / "report.json"
    env = {**os.environ, "PARAINFER_MIN_SHARD_BYTES": "1000"}
    done = subprocess.run(cli(src, out, "parainfer.testing:crash_on_marker", "--max-retries", "0",
                              "--report", str(report)), env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 1, done.stderr
    errors = [json.loads(x) for x in (tmp_path / "out.errors.jsonl").read_text().splitlines()]
    died = [e for e in errors if "worker died" in e["reason"]]
    assert [(e["id"], e["line"]) for e in died] == [("r290", 291)]
    out_ids = [json.loads(x)["id"] for x in out.read_text().splitlines()]
    assert out_ids + [e["id"] for e in errors] != []
    assert sorted(out_ids + [e["id"] for e in errors], key=lambda s: int(s[1:])) == [f"r{i}" for i in range(300)]
    assert out_ids == sorted(out_ids, key=lambda s: int(s[1:]))
    rep = json.loads(report.read_text())
    assert rep["data_path"] == "sharded" and rep["bisected_shards"] >= 1 and rep["restarts"] >= 1


def test_parquet_rows_that_mix_types_fail_alone_and_both_modes_write_the_same_bytes(tmp_path: Path) -> None:
    """The user's file: some rows name an id, the others get their line number (an int), and a
    passthrough column whose type varies. ``run mix.jsonl -o mix.parquet`` ends without a
    traceback in record and sharded mode alike, with the same bytes: the rows that do not fit
    the first rows' types go to the errors file naming the column and both types."""
    rows = []
    for i in range(300):
        row = {"id": f"r{i}", "text": f"text number {i}", "n": f"n{i}" if i % 11 == 5 else i}
        if i % 7 == 3:
            del row["id"]
        rows.append(row)
    src = tmp_path / "mix.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {**os.environ, **SMALL_SHARDS}
    for mode in ("off", "on"):
        args = [sys.executable, "-m", "parainfer.cli", "run", str(src), "-o", str(tmp_path / f"{mode}.parquet"),
                "--model", "parainfer.testing:echo", "--shard-mode", mode, "--batch-size", "16", "-q",
                "--bucket-window", "64",  # shards end at window boundaries: 300 rows make several
                "--report", str(tmp_path / f"{mode}.report.json")]
        proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr  # 1: some records failed
    reports = {m: json.loads((tmp_path / f"{m}.report.json").read_text()) for m in ("off", "on")}
    assert (reports["off"]["data_path"], reports["on"]["data_path"]) == ("records", "sharded")
    assert reports["on"]["shards"]["committed"] > 1
    assert (tmp_path / "on.parquet").read_bytes() == (tmp_path / "off.parquet").read_bytes()
    assert (tmp_path / "on.errors.jsonl").read_bytes() == (tmp_path / "off.errors.jsonl").read_bytes()
    bad_id = {i for i in range(300) if i % 7 == 3}
    bad_n = {i for i in range(300) if i % 11 == 5} - bad_id
    table = pq.read_table(tmp_path / "off.parquet")
    assert table.schema.field("id").type == "string" and table.schema.field("n").type == "int64"
    assert table.column("id").to_pylist() == [f"r{i}" for i in range(300) if i not in bad_id | bad_n]
    errors = [json.loads(x) for x in (tmp_path / "off.errors.jsonl").read_text().splitlines()]
    assert [e["line"] for e in errors] == sorted(i + 1 for i in bad_id | bad_n)  # nothing lost: each row once
    for e in errors:
        i = e["line"] - 1
        if i in bad_id:
            assert e["id"] == i + 1 and "column 'id' is string" in e["reason"]
            assert f"value is int {i + 1}" in e["reason"] and "line number" in e["reason"]
        else:
            assert e["id"] == f"r{i}" and "column 'n' is int64" in e["reason"] and f"value is str 'n{i}'" in e["reason"]

