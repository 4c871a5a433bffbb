"""Sharded mode's parity options: --task-timeout bounds each batch inside a shard (a hung record
ends in the errors file, the rest in the output, in order), and a CSV part written under
another header than the job's is redone with the job's, so rows with a column the header lacks
fail alone exactly as in record mode."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from parainfer.config import JobConfig
from parainfer.batch.job import Job
from parainfer.errors import UsageError
from tests.e2e.test_sharded import MODEL, cli, workers  # noqa: F401 - the module's two ready workers
from tests.io.test_shards import rows

MARKER = "@@crash@@"


def test_task_timeout_fails_the_hung_record_alone(tmp_path: Path) -> None:
    data = rows(300)
    data[150]["text"] += MARKER  # parainfer.testing:hang_on_marker sleeps an hour on it
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
    out, report = tmp_path / "out.csv", tmp_path / "report.json"
    env = {**os.environ, "PARAINFER_MIN_SHARD_BYTES": "1000"}
    done = subprocess.run(cli(src, out, "parainfer.testing:hang_on_marker", "--max-retries", "0", "--task-timeout",
                              "1", "--report", str(report)), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    errors = [json.loads(x) for x in (tmp_path / "out.errors.jsonl").read_text().splitlines()]
    hung = [e for e in errors if "timed out after 1 s" in e["reason"]]
    assert [(e["id"], e["line"]) for e in hung] == [("r150", 151)]
    assert "(--task-timeout)" in hung[0]["reason"]
    out_ids = [line.split(",", 1)[0] for line in out.read_text().splitlines()[1:] if line.startswith("r")]
    assert len(out_ids) + len(errors) == 300 and "r150" not in out_ids
    rep = json.loads(report.read_text())
    assert rep["data_path"] == "sharded" and rep["restarts"] >= 1


def test_a_part_under_another_csv_header_is_redone(tmp_path: Path, workers, monkeypatch) -> None:  # noqa: F811
    data = rows(1200)
    for r in data[10:]:
        r["extra"] = 1  # record mode: a row with a column the header (from row 0) lacks fails alone
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
    monkeypatch.setenv("PARAINFER_MIN_SHARD_BYTES", "2000")
    reports = {}
    for mode in ("off", "on"):  # the two workers are ready: shards 0 and 1 start together, before any header
        config = JobConfig(input=str(src), output=str(tmp_path / f"{mode}.csv"), model=MODEL,
                           workers=2, batch_size=16, bucket_window=64, shard_mode=mode, quiet=True)
        reports[mode] = Job(config).run(workers)
    assert reports["on"]["data_path"] == "sharded" and reports["on"]["redone_shards"] >= 1
    assert (tmp_path / "on.csv").read_bytes() == (tmp_path / "off.csv").read_bytes()
    assert (tmp_path / "on.errors.jsonl").read_bytes() == (tmp_path / "off.errors.jsonl").read_bytes()
    assert reports["on"]["failed_records"] == reports["off"]["failed_records"] >= 1190
    assert reports["on"]["records"] == reports["off"]["records"]


def test_batch_size_auto_runs_sharded_with_the_same_output(tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows(1500)), encoding="utf-8")
    monkeypatch.setenv("PARAINFER_MIN_SHARD_BYTES", "2000")
    reports = {}
    for mode in ("off", "on"):
        config = JobConfig(input=str(src), output=str(tmp_path / f"{mode}.parquet"), model="parainfer.testing:echo",
                           workers=2, batch_size="auto", max_auto_batch_size=64, shard_mode=mode, quiet=True)
        reports[mode] = Job(config).run()
    assert reports["on"]["data_path"] == "sharded"
    assert (tmp_path / "on.parquet").read_bytes() == (tmp_path / "off.parquet").read_bytes()
    sizes = [size for _, size in reports["on"]["batch_sizes"]]
    assert sizes == [64]  # auto runs one fixed batch size (its tuner sizes record mode's tasks, never batches)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_folder_keeps_parts_that_are_each_a_file_of_the_format(fmt: str, tmp_path: Path, workers,  # noqa: F811
                                                                 monkeypatch) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows(1500)), encoding="utf-8")
    monkeypatch.setenv("PARAINFER_MIN_SHARD_BYTES", "2000")
    for out in (f"{tmp_path}/rec.{fmt}", f"{tmp_path}/parts.{fmt}/"):
        config = JobConfig(input=str(src), output=out, model=MODEL, workers=2, batch_size=16, bucket_window=64,
                           shard_mode="auto", quiet=True)  # auto: a folder runs sharded whatever the input size
        rep = Job(config).run(workers)
    assert rep["data_path"] == "sharded" and rep["shards"]["committed"] > 4
    folder = tmp_path / f"parts.{fmt}"
    names = json.loads((folder / "manifest.json").read_text())["parts"]
    assert len(names) > 4 and all(name.endswith(f".{fmt}") for name in names)
    if fmt == "csv":
        record = (tmp_path / "rec.csv").read_bytes()
        header, _ = record.split(b"\r\n", 1)
        parts = [(folder / name).read_bytes() for name in names]
        assert all(part.startswith(header + b"\r\n") for part in parts)  # each part is a CSV file of its own
        assert header + b"\r\n" + b"".join(part[len(header) + 2:] for part in parts) == record
    else:
        tables = [pq.read_table(folder / name) for name in names]  # each part is a Parquet file of its own
        assert pa.concat_tables(tables).equals(pq.read_table(tmp_path / "rec.parquet"))
    assert (tmp_path / "parts.errors.jsonl").read_bytes() == (tmp_path / "rec.errors.jsonl").read_bytes()


@pytest.mark.parametrize("mode", ["off", "on"])
def test_an_edited_finished_output_is_refused_naming_what_changed(mode: str, tmp_path: Path, workers,  # noqa: F811
                                                                  monkeypatch) -> None:
    """A same-size edit is a changed content (not a wrong size); a longer file quotes both sizes."""
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows(600)), encoding="utf-8")
    monkeypatch.setenv("PARAINFER_MIN_SHARD_BYTES", "2000")
    out = tmp_path / "out.jsonl"
    config = JobConfig(input=str(src), output=str(out), model=MODEL, workers=2, batch_size=16, bucket_window=64,
                       shard_mode=mode, quiet=True)
    assert Job(config).run(workers)["data_path"] == ("sharded" if mode == "on" else "records")
    good = out.read_bytes()
    out.write_bytes(good.replace(b'"r5"', b'"r6"', 1))
    with pytest.raises(UsageError) as same:
        Job(config).run(workers)
    assert (f"was changed after its job finished: it has the {len(good):,} bytes its checkpoint recorded, but its "
            "content differs") in str(same.value)
    out.write_bytes(good + b"\n")
    with pytest.raises(UsageError) as longer:
        Job(config).run(workers)
    assert f"it has {len(good) + 1:,} bytes, not the {len(good):,} its checkpoint recorded" in str(longer.value)
    out.write_bytes(good)
    assert Job(config).run(workers)["already_complete"]


def test_an_edited_or_lost_part_of_a_folder_output_is_named(tmp_path: Path, workers, monkeypatch) -> None:  # noqa: F811
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows(600)), encoding="utf-8")
    monkeypatch.setenv("PARAINFER_MIN_SHARD_BYTES", "2000")
    folder = tmp_path / "parts"
    config = JobConfig(input=str(src), output=f"{folder}/", model=MODEL, workers=2, batch_size=16, bucket_window=64,
                       shard_mode="on", quiet=True)
    Job(config).run(workers)
    part = folder / json.loads((folder / "manifest.json").read_text())["parts"][0]
    good = part.read_bytes()
    part.write_bytes(good.replace(b'"r5"', b'"r6"', 1))
    with pytest.raises(UsageError) as same:
        Job(config).run(workers)
    assert (f"committed part {str(part)!r} was changed or lost since its checkpoint: it has the {len(good):,} bytes "
            "its checkpoint recorded, but its content differs") in str(same.value)
    part.unlink()
    with pytest.raises(UsageError) as lost:
        Job(config).run(workers)
    assert f"committed part {str(part)!r} was changed or lost since its checkpoint: it is missing" in str(lost.value)
