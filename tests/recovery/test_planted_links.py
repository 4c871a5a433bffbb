"""`parainfer run` never writes through a link planted next to the output, never deletes or
overwrites a file it did not write without --overwrite, and leaves no lock behind on any exit.

Each test runs the real command line (a subprocess, as a user would) in record mode and in
sharded mode (``--shard-mode on``), plants a symbolic link to a victim file where parainfer
keeps one of its files, and checks the exit code, the one line and the victim's bytes."""

from __future__ import annotations

import json
import os
import resource
import subprocess
from pathlib import Path

import faultkit
import pytest

RECORDS = 300
MODES = {"records": ["--shard-mode", "off"], "sharded": ["--shard-mode", "on"]}
VICTIM = b'{"id": "v", "text": "precious data of the user"}\n' * 100


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return faultkit.write_input(tmp_path / "in.jsonl", records=RECORDS, marked=(5, 150))


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim.jsonl"
    path.write_bytes(VICTIM)
    return path


ENV = {"PARAINFER_MIN_SHARD_BYTES": "4096"}  # several shards of a small input


def run(src: Path, out: Path, mode: str, *extra: str, model: str = "parainfer.testing:echo") -> subprocess.CompletedProcess:
    return faultkit.run(faultkit.command(src, out, *MODES[mode], *extra, model=model), env=ENV)


def refused(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """The one line of an exit-2 refusal, checked to hold each needle."""
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line, proc.stderr
    for needle in needles:
        assert needle in line, line
    return line


def no_lock(out: Path) -> bool:
    return not os.path.lexists(str(out).rstrip("/") + ".parainfer-lock")


# Where parainfer keeps each of its files for output ``out`` (a file in tmp_path).
SIDE_FILES = {
    "lock file": lambda out: Path(f"{out}.parainfer-lock"),
    "checkpoint": lambda out: Path(f"{out}.parainfer-checkpoint.json"),
    "errors file": lambda out: out.with_name(out.stem + ".errors.jsonl"),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("what", SIDE_FILES)
def test_a_link_planted_at_a_file_next_to_the_output_is_refused(what: str, mode: str, src: Path, victim: Path,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    link = SIDE_FILES[what](out)
    link.symlink_to(victim)
    line = refused(run(src, out, mode), f"{what} {str(link)!r}", "symbolic link", "refuses to follow it")
    assert str(victim) in line
    assert victim.read_bytes() == VICTIM and link.is_symlink() and not out.exists()
    if what != "lock file":
        assert no_lock(out)


@pytest.mark.parametrize("mode", MODES)
def test_a_link_planted_at_the_report_is_refused(mode: str, src: Path, victim: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    report.symlink_to(victim)
    out = tmp_path / "out.jsonl"
    refused(run(src, out, mode, "--report", str(report), "--overwrite"), f"report {str(report)!r}", "symbolic link")
    assert victim.read_bytes() == VICTIM and no_lock(out)


def test_a_hard_link_at_the_lock_is_refused(src: Path, victim: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    os.link(victim, f"{out}.parainfer-lock")  # the same attack with `ln` instead of `ln -s`
    refused(run(src, out, "records"), "lock file", "hard links")
    assert victim.read_bytes() == VICTIM


def test_the_input_planted_as_the_lock_is_kept(src: Path, tmp_path: Path) -> None:
    before = src.read_bytes()
    out = tmp_path / "out.jsonl"
    Path(f"{out}.parainfer-lock").symlink_to(src)  # what the fault probe did: the lock was the input
    refused(run(src, out, "records"), "lock file", "symbolic link")
    assert src.read_bytes() == before


@pytest.mark.parametrize("mode, output, folder", [("records", "out.parquet", "out.parquet.parainfer-parts"),
                                                  ("sharded", "out.jsonl", "out.jsonl.parainfer-shards")])
def test_a_linked_parts_folder_is_refused(mode: str, output: str, folder: str, src: Path, tmp_path: Path) -> None:
    victims = tmp_path / "victims"
    victims.mkdir()
    (victims / "part-000000.parquet").write_bytes(VICTIM)
    (victims / "000000000000000-t0.jsonl").write_bytes(VICTIM)
    (tmp_path / folder).symlink_to(victims)
    out = tmp_path / output
    refused(run(src, out, mode), repr(str(tmp_path / folder)), "symbolic link")
    assert sorted(p.name for p in victims.iterdir()) == ["000000000000000-t0.jsonl", "part-000000.parquet"]
    assert all(p.read_bytes() == VICTIM for p in victims.iterdir()) and no_lock(out)


@pytest.mark.parametrize("mode, output, part", [("records", "out.parquet", "out.parquet.parainfer-parts/part-000000.parquet"),
                                                ("sharded", "out.jsonl", "out.jsonl.parainfer-shards/000000000000000-t0.jsonl")])
def test_a_link_planted_as_a_part_file_is_refused(mode: str, output: str, part: str, src: Path, victim: Path,
                                                  tmp_path: Path) -> None:
    link = tmp_path / part
    link.parent.mkdir()
    link.symlink_to(victim)
    out = tmp_path / output
    refused(run(src, out, mode), repr(str(link)), "symbolic link", "refuses to follow it")
    assert victim.read_bytes() == VICTIM and no_lock(out)
    refused(run(src, out, mode, "--overwrite"), repr(str(link)), "symbolic link")  # --overwrite follows no link
    assert victim.read_bytes() == VICTIM


def test_a_link_planted_as_an_output_folders_manifest_is_refused(src: Path, victim: Path, tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    (folder / "manifest.json").symlink_to(victim)
    refused(run(src, Path(f"{folder}/"), "sharded"), "checkpoint", "manifest.json", "symbolic link")
    assert victim.read_bytes() == VICTIM and no_lock(folder)


@pytest.mark.parametrize("mode, output, old_temp", [("records", "out.parquet", "out.parquet.tmp"),
                                                    ("sharded", "out.jsonl", "out.jsonl.parainfer-tmp"),
                                                    ("sharded", "out.parquet", "out.parquet.parainfer-tmp")])
def test_temp_files_have_new_names_so_a_planted_one_is_never_used(mode: str, output: str, old_temp: str, src: Path,
                                                                  victim: Path, tmp_path: Path) -> None:
    link = tmp_path / old_temp  # the fixed temp name an older parainfer wrote through
    link.symlink_to(victim)
    report = tmp_path / "report.json"
    out = tmp_path / output
    proc = run(src, out, mode, "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    assert victim.read_bytes() == VICTIM and link.is_symlink()
    assert json.loads(report.read_text())["records"] == RECORDS
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["in.jsonl", "victim.jsonl", old_temp, output, f"{output}.parainfer-checkpoint.json",
                           "report.json"]), left  # no temp file, lock or parts folder left


@pytest.mark.parametrize("mode", MODES)
def test_an_errors_file_parainfer_did_not_write_is_kept_unless_overwrite(mode: str, src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    errors = tmp_path / "out.errors.jsonl"
    errors.write_text("my own notes\n")
    line = refused(run(src, out, mode, model="parainfer.testing:raise_on_marker"), f"errors file {str(errors)!r}",
                   "not written by parainfer", "--overwrite")
    assert "--errors" in line and errors.read_text() == "my own notes\n" and no_lock(out)
    proc = run(src, out, mode, "--overwrite", model="parainfer.testing:raise_on_marker")
    assert proc.returncode == 1, proc.stderr  # records failed: they are in the errors file now
    assert [json.loads(x)["id"] for x in errors.read_text().splitlines()] == ["r5", "r150"]
    again = run(src, out, mode, model="parainfer.testing:raise_on_marker")  # the checkpoint lists it: its own
    assert again.returncode == 1 and "already complete" in again.stderr, again.stderr


def test_the_checkpoint_lists_its_errors_file_so_another_one_is_foreign(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    assert run(src, out, "records", model="parainfer.testing:raise_on_marker").returncode == 1
    out.unlink()  # the rerun starts over ...
    other = tmp_path / "other.errors.jsonl"
    other.write_text("not parainfer's\n")  # ... with an --errors the checkpoint does not list
    refused(run(src, out, "records", "--errors", str(other), model="parainfer.testing:raise_on_marker"),
            f"errors file {str(other)!r}", "the checkpoint next to the output does not list it")
    assert other.read_text() == "not parainfer's\n"


@pytest.mark.parametrize("mode", MODES)
def test_a_report_parainfer_did_not_write_is_kept_unless_overwrite(mode: str, src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    report = tmp_path / "report.json"
    report.write_text('{"my": "spreadsheet export"}\n')
    refused(run(src, out, mode, "--report", str(report)), f"report {str(report)!r}", "not a parainfer run report",
            "--overwrite", "--report")
    assert report.read_text() == '{"my": "spreadsheet export"}\n' and no_lock(out) and not out.exists()
    proc = run(src, out, mode, "--report", str(report), "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(report.read_text())["records"] == RECORDS
    second = tmp_path / "second.jsonl"  # a run report (any job's) is parainfer's: the next one replaces it
    proc = run(src, second, mode, "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(report.read_text())["records"] == RECORDS


@pytest.mark.parametrize("mode, output, folder, own", [
    ("records", "out.parquet", "out.parquet.parainfer-parts", "part-000003.parquet"),
    ("sharded", "out.jsonl", "out.jsonl.parainfer-shards", "000000000004096-t9.jsonl")])
def test_user_files_in_the_parts_folder_are_never_deleted(mode: str, output: str, folder: str, own: str,
                                                          src: Path, tmp_path: Path) -> None:
    parts = tmp_path / folder
    parts.mkdir()
    (parts / "notes.txt").write_text("mine")
    (parts / own).write_bytes(b"a stale part of an earlier run")
    out = tmp_path / output
    refused(run(src, out, mode), f"{str(parts)!r} holds 'notes.txt'", "did not write", "--overwrite")
    assert sorted(p.name for p in parts.iterdir()) == sorted(["notes.txt", own]) and no_lock(out)
    clean = tmp_path / f"clean{Path(output).suffix}"
    assert run(src, clean, mode).returncode == 0
    proc = run(src, out, mode, "--overwrite")  # runs; parainfer's own files go, the user's stay
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in parts.iterdir()] == ["notes.txt"] and (parts / "notes.txt").read_text() == "mine"
    assert out.read_bytes() == clean.read_bytes()


def _mount_tmpfs(folder: Path) -> bool:
    folder.mkdir()
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                          capture_output=True, check=False).returncode == 0


def _no_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # no byte may be written: the lock's first write fails


@pytest.mark.parametrize("mode", MODES)
def test_a_full_disk_before_the_start_names_the_file_and_leaves_no_lock(mode: str, src: Path, tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    mounted = _mount_tmpfs(disk)  # a real full tmpfs as root; else a file size limit of 0 bytes
    try:
        if mounted:
            fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
            try:
                while os.write(fd, b"\0" * 4096):
                    pass
            except OSError:  # ENOSPC: the disk is full
                pass
            finally:
                os.close(fd)
        out = disk / "out.jsonl"
        proc = subprocess.run(faultkit.command(src, out, *MODES[mode], model="parainfer.testing:echo"),
                              capture_output=True, text=True, timeout=120, env={**os.environ, **faultkit.ENV, **ENV},
                              preexec_fn=None if mounted else _no_file_size, check=False)
        assert proc.returncode == 4, proc.stderr
        line = proc.stderr.strip()
        assert len(line.splitlines()) == 1 and "Traceback" not in line, proc.stderr
        assert f"'{out}.parainfer-lock'" in line, line  # the file it could not write, named
        assert ("No space left on device" if mounted else "File too large") in line, line
        assert no_lock(out)
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], check=True)
