"""The user's data is never lost to a slip: the output path is guarded, one output has one job,
and a resume (or "already complete") is verified against the digest of the committed bytes."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

import faultkit
from parainfer.config import JobConfig
from parainfer.batch.job import Job
from parainfer.errors import UsageError
from parainfer.io.checkpoint import write_manifest


def one_line_exit_2(proc, needle: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_output_that_is_the_input_is_refused_and_the_input_kept(fmt: str, tmp_path: Path) -> None:
    src = tmp_path / f"in.{fmt}"
    src.write_text('{"id": 1, "text": "hi"}\n' if fmt == "jsonl" else "id,text\n1,hi\n")
    before = src.read_bytes()
    proc = faultkit.run(faultkit.command(src, src, model="parainfer.testing:echo"))
    one_line_exit_2(proc, "is the input file")
    assert src.read_bytes() == before


@pytest.mark.parametrize("link", ["symlink", "hardlink", "dotted"])
def test_links_to_the_input_are_the_input(link: str, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 1, "text": "hi"}\n')
    out = tmp_path / "out.jsonl"
    if link == "symlink":
        out.symlink_to(src)
    elif link == "hardlink":
        os.link(src, out)
    else:
        out = tmp_path / "sub" / ".." / "in.jsonl"
        (tmp_path / "sub").mkdir()
    with pytest.raises(UsageError, match="is the input file"):
        Job(JobConfig(input=str(src), output=str(out), model="parainfer.testing:echo", workers=1))
    with pytest.raises(UsageError, match="errors file .* is the input file"):
        Job(JobConfig(input=str(src), output=str(tmp_path / "o.jsonl"), errors=str(out),
                      model="parainfer.testing:echo", workers=1))
    assert src.read_text() == '{"id": 1, "text": "hi"}\n'


def test_a_file_parainfer_did_not_write_is_kept_unless_overwrite(fault_input: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("precious results of another program\n")
    cmd = faultkit.command(fault_input, out, model="parainfer.testing:echo")
    one_line_exit_2(faultkit.run(cmd), "--overwrite")
    assert out.read_text() == "precious results of another program\n"
    proc = faultkit.run(cmd + ["--overwrite"])
    assert proc.returncode == 0, proc.stderr
    assert len(out.read_text().splitlines()) == faultkit.RECORDS


def test_a_second_job_on_the_same_output_is_refused_while_the_first_runs(fault_input: Path, clean_output,
                                                                          tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    cmd = faultkit.command(fault_input, out)
    first = faultkit.start(cmd)
    assert len(faultkit.wait_workers(first)) == 2
    second = faultkit.run(cmd)
    one_line_exit_2(second, f"pid {first.pid}")
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    assert out.read_bytes() == clean_output("jsonl")
    assert not Path(str(out) + ".parainfer-lock").exists()


def test_manifest_temp_files_are_unique(tmp_path: Path) -> None:
    path = str(tmp_path / "out.jsonl.parainfer-checkpoint.json")
    os.mkdir(path + ".tmp")  # the old shared temp name is taken: a unique one is used
    write_manifest(path, {"version": 1, "records_done": 3})
    assert json.loads(Path(path).read_text())["records_done"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [Path(path).name, Path(path).name + ".tmp"]


def interrupted_run(cmd: list[str], out: Path) -> int:
    """Start the job, SIGINT it once some rows are committed; returns records_done."""
    proc = faultkit.start(cmd, env={"PARAINFER_TEST_MS_PER_TOKEN": "0.15"})
    manifest = Path(str(out) + ".parainfer-checkpoint.json")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if manifest.exists() and json.loads(manifest.read_text() or "{}").get("records_done", 0) > 200:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    return json.loads(manifest.read_text())["records_done"]


def test_a_partial_output_cut_or_edited_is_not_resumed(fault_input: Path, clean_output, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    cmd = faultkit.command(fault_input, out)
    committed = interrupted_run(cmd, out)
    assert 200 < committed < faultkit.RECORDS
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[100:]) + b"".join(lines[:100]))  # same size, other bytes
    edited = out.read_bytes()
    one_line_exit_2(faultkit.run(cmd), "was changed since its checkpoint")
    assert out.read_bytes() == edited  # refused before anything was cut or written
    proc = faultkit.run(cmd + ["--overwrite"])
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == clean_output("jsonl")


def test_a_finished_output_or_errors_file_edited_is_not_called_complete(tmp_path: Path) -> None:
    src = faultkit.write_input(tmp_path / "in.jsonl", records=300, marked=(7,))
    out = tmp_path / "out.jsonl"
    cmd = faultkit.command(src, out, model="parainfer.testing:raise_on_marker")
    assert faultkit.run(cmd).returncode == 1
    good_out = out.read_bytes()
    errors = tmp_path / "out.errors.jsonl"
    good_err = errors.read_bytes()
    out.write_bytes(good_out.replace(b'"r5"', b'"r6"', 1))  # one byte inside the finished output
    one_line_exit_2(faultkit.run(cmd), "was changed after its job finished")
    out.write_bytes(good_out)
    errors.write_bytes(good_err.replace(b"poison", b"Poison"))
    one_line_exit_2(faultkit.run(cmd), "errors file")
    errors.write_bytes(good_err)
    again = faultkit.run(cmd)
    assert again.returncode == 1 and "already complete" in again.stderr, again.stderr
