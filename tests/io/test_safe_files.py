"""Files parainfer keeps next to the output are never opened through a planted link: each layer
(the lock, the errors file, the manifest, the report, Parquet parts, shard parts, temp files)
refuses a symbolic link, a hard link or a special file on its own, whatever the up-front checks
did, and the file at the other end keeps its bytes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from parainfer.batch.report import is_run_report, write_report
from parainfer.errors import UsageError
from parainfer.io.checkpoint import check_parts_folder, read_manifest, write_manifest
from parainfer.io.guard import OutputLock
from parainfer.io.parquet_parts import PartedParquetSink, is_part_name, part_path
from parainfer.io.safe_files import (
    atomic_write,
    check_own_dir,
    check_regular_or_absent,
    open_no_follow,
    remove_own,
)
from parainfer.io.shards.part_sinks import open_part
from parainfer.io.sinks import ErrorSink
from parainfer.records import RecordError

VICTIM = b'{"id": 1, "text": "the user\'s data"}\n' * 50


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim.jsonl"
    path.write_bytes(VICTIM)
    return path


def plant(path: Path, victim: Path, how: str = "symlink") -> Path:
    if how == "symlink":
        path.symlink_to(victim)
    elif how == "hardlink":
        os.link(victim, path)
    else:
        os.mkfifo(path)
    return path


@pytest.mark.parametrize("how, said", [("symlink", "is a symbolic link"), ("hardlink", "has 2 hard links"),
                                       ("fifo", r"not a regular file \(a named pipe\)")])
def test_the_lock_refuses_a_planted_file(how: str, said: str, tmp_path: Path, victim: Path) -> None:
    lock = plant(tmp_path / "out.jsonl.parainfer-lock", victim, how)
    with pytest.raises(UsageError, match=said) as e:
        OutputLock(str(tmp_path / "out.jsonl")).acquire()
    assert str(lock) in str(e.value)
    assert victim.read_bytes() == VICTIM
    assert os.path.lexists(lock)  # refused, not removed: it is not parainfer's


def test_the_lock_is_written_and_removed_when_it_is_its_own(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    stale = tmp_path / "out.jsonl.parainfer-lock"
    stale.write_text('{"pid": 1, "host": "gone"}')  # a killed job's lock: a regular file, not locked
    with OutputLock(str(out)) as lock:
        assert json.loads(stale.read_text())["pid"] == os.getpid()
        with pytest.raises(UsageError, match=f"pid {os.getpid()} on host"):
            OutputLock(str(out)).acquire()
        assert lock.path == str(stale)
    assert not stale.exists()


def test_a_dangling_link_is_a_link(tmp_path: Path) -> None:
    link = tmp_path / "errors.jsonl"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(UsageError, match="symbolic link .*nowhere.*refuses to follow it"):
        check_regular_or_absent(str(link), "errors file")
    with pytest.raises(UsageError, match="symbolic link"):
        open_no_follow(str(link), os.O_WRONLY | os.O_CREAT, "errors file")
    assert not (tmp_path / "nowhere").exists()


def test_open_no_follow_cuts_only_after_the_check(tmp_path: Path, victim: Path) -> None:
    link = plant(tmp_path / "f", victim, "hardlink")
    with pytest.raises(UsageError, match="hard links"):
        open_no_follow(str(link), os.O_WRONLY | os.O_TRUNC, "part")
    assert victim.read_bytes() == VICTIM
    own = tmp_path / "own"
    own.write_bytes(b"old")
    fd = open_no_follow(str(own), os.O_WRONLY | os.O_TRUNC, "part")
    os.write(fd, b"new")
    os.close(fd)
    assert own.read_bytes() == b"new"


@pytest.mark.parametrize("how", ["symlink", "hardlink"])
def test_the_errors_file_is_not_written_or_deleted_through_a_link(how: str, tmp_path: Path, victim: Path) -> None:
    path = plant(tmp_path / "out.errors.jsonl", victim, how)
    err = RecordError(0, 1, "r0", "boom", text="x")
    with pytest.raises(UsageError, match="errors file"):
        ErrorSink(str(path)).write([err])
    with pytest.raises(UsageError, match="errors file"):
        ErrorSink(str(path)).resume(0)  # a fresh start deletes a stale errors file: never a link
    with pytest.raises(UsageError, match="errors file"):
        ErrorSink(str(path)).resume(10, None)
    assert victim.read_bytes() == VICTIM and os.path.lexists(path)


def test_the_manifest_is_never_read_or_written_through_a_link(tmp_path: Path, victim: Path) -> None:
    path = plant(tmp_path / "out.jsonl.parainfer-checkpoint.json", victim)
    with pytest.raises(UsageError, match="checkpoint .* symbolic link"):
        read_manifest(str(path))
    write_manifest(str(path), {"version": 1, "records_done": 3})  # replaces the link itself
    assert victim.read_bytes() == VICTIM
    assert not path.is_symlink() and read_manifest(str(path))["records_done"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, victim.name]  # no temp file left


def test_a_hard_linked_checkpoint_is_read_and_replaced_never_written_in_place(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl.parainfer-checkpoint.json"
    write_manifest(str(path), {"version": 1, "records_done": 3})
    snapshot = tmp_path / "backup.json"
    os.link(path, snapshot)  # a hard-link backup (cp -al): harmless, the manifest is replaced by a rename
    assert read_manifest(str(path))["records_done"] == 3
    write_manifest(str(path), {"version": 1, "records_done": 7})
    assert json.loads(snapshot.read_text())["records_done"] == 3 and read_manifest(str(path))["records_done"] == 7


def test_the_report_replaces_a_link_and_knows_its_own(tmp_path: Path, victim: Path) -> None:
    path = plant(tmp_path / "report.json", victim)
    report = {"records": 1, "timeline": []}
    write_report(report, str(path))
    assert victim.read_bytes() == VICTIM and json.loads(path.read_text()) == report
    assert not is_run_report(str(path))  # not every key of a run report
    assert not is_run_report(str(victim)) and not is_run_report(str(tmp_path / "missing.json"))


def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path: Path) -> None:
    dest = tmp_path / "out.parquet"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="half-way"), atomic_write(str(dest)) as f:
        f.write(b"partial")
        raise RuntimeError("half-way")
    assert dest.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["out.parquet"]
    old_temp = tmp_path / "out.parquet.tmp"  # the fixed name an older parainfer used: never opened now
    old_temp.symlink_to(dest)
    with atomic_write(str(dest)) as f:
        f.write(b"new")
    assert dest.read_bytes() == b"new" and old_temp.is_symlink()


def test_parquet_parts_folder_and_part_files(tmp_path: Path, victim: Path) -> None:
    victims = tmp_path / "victims"
    victims.mkdir()
    (victims / "part-000000.parquet").write_bytes(VICTIM)
    folder = tmp_path / "out.parquet.parainfer-parts"
    folder.symlink_to(victims)
    with pytest.raises(UsageError, match="Parquet parts folder .* symbolic link"):
        PartedParquetSink(str(tmp_path / "out.parquet"), str(folder), "id", "text")
    assert (victims / "part-000000.parquet").read_bytes() == VICTIM
    folder.unlink()
    sink = PartedParquetSink(str(tmp_path / "out.parquet"), str(folder), "id", "text")
    plant(Path(part_path(str(folder), 0)), victim)  # planted while the job runs
    sink.write_rows([{"id": "a", "text": "x"}])
    with pytest.raises(UsageError, match="Parquet part .* symbolic link"):
        sink.flush()
    assert victim.read_bytes() == VICTIM


def test_parts_folder_keeps_files_parainfer_did_not_write(tmp_path: Path) -> None:
    folder = tmp_path / "out.parquet.parainfer-parts"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    (folder / "part-000000.parquet").write_bytes(b"stale")
    with pytest.raises(UsageError, match="holds 'notes.txt', which parainfer did not write.*--overwrite"):
        check_parts_folder(str(folder), False, "Parquet parts folder", is_part_name)
    check_parts_folder(str(folder), True, "Parquet parts folder", is_part_name)  # --overwrite: run anyway
    remove_own(str(folder), is_part_name, rmdir=True)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]  # the folder stays with the user's file
    assert [is_part_name(n) for n in ("part-000012.parquet", "part-12.parquet", "part-000012.parquet.bak")] == [
        True, False, False]


def test_a_shard_part_is_not_written_through_a_link(tmp_path: Path, victim: Path) -> None:
    part = plant(tmp_path / "000000000000000-t0.jsonl", victim)
    with pytest.raises(UsageError, match="shard part .* symbolic link"):
        open_part(str(part), ".jsonl", "id", "text")
    assert victim.read_bytes() == VICTIM


def test_own_folders_are_real_folders(tmp_path: Path, victim: Path) -> None:
    (tmp_path / "linked").symlink_to(tmp_path)
    with pytest.raises(UsageError, match="shards folder .* symbolic link"):
        check_own_dir(str(tmp_path / "linked"), "shards folder")
    with pytest.raises(UsageError, match="shards folder .* is not a folder"):
        check_own_dir(str(victim), "shards folder")
    assert check_own_dir(str(tmp_path), "shards folder") and not check_own_dir(str(tmp_path / "new"), "x")
