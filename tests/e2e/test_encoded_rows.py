"""Record mode with output rows encoded by the workers and tasks of several batches: the
output and errors files are byte for byte those of the driver-side path (rows built by the
merger, encoded by the sink, one batch a task), in JSONL and CSV."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parainfer.config import JobConfig
from parainfer.batch.job import Job, start_workers
from parainfer.models.registry import build_predictor

MODEL = "parainfer.testing:raise_on_marker"  # echo, but a text with "@@crash@@" raises


@pytest.fixture(scope="module")
def tricky_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,200 rows: an input column named like the model's result ("length"), non-ASCII text,
    nested and 64-bit-overflowing columns, missing ids, bad lines, and poison texts."""
    lines = []
    for i in range(1200):
        row = {"id": f"r{i}", "text": "wörd ✓ " * (1 + (i * 37) % 60), "k": i}
        if i % 7 == 0:
            row["length"] = -i  # renamed input_length in the output
        if i % 11 == 0:
            row["nested"] = {"a": [1, 2.5, None], "b": "x"}
        if i % 13 == 0:
            del row["id"]  # the id is the line number
        lines.append(json.dumps(row, ensure_ascii=False))
    lines[5] = '{"id": "big", "text": "a big id", "n": 123456789012345678901234567890}'
    lines[100] = "{not json"
    lines[333] = json.dumps({"id": "empty", "text": "  "})
    for i in (17, 600, 1111):
        lines[i] = json.dumps({"id": f"p{i}", "text": f"poison @@crash@@ {i}"})
    path = tmp_path_factory.mktemp("enc") / "in.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def workers():
    started = start_workers(build_predictor("classify", MODEL), 2)
    yield started
    started.shutdown()


def run(src: Path, out: Path, workers, encode: bool, group: int) -> dict:
    job = Job(JobConfig(input=str(src), output=str(out), model=MODEL, workers=2, quiet=True, overwrite=True,
                        shard_mode="off", batch_size=8, bucket_window=256, errors=str(out) + ".err.jsonl"))
    job.encode_in_workers, job.task_group = encode, group
    return job.run(workers)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_worker_encoded_rows_and_grouped_tasks_write_the_same_bytes(tricky_input: Path, tmp_path: Path, workers,
                                                                      fmt: str) -> None:
    before, after = tmp_path / f"before.{fmt}", tmp_path / f"after.{fmt}"
    rep_before = run(tricky_input, before, workers, encode=False, group=1)
    rep_after = run(tricky_input, after, workers, encode=True, group=4)
    assert before.read_bytes() == after.read_bytes()
    assert Path(str(before) + ".err.jsonl").read_bytes() == Path(str(after) + ".err.jsonl").read_bytes()
    errors = [json.loads(x) for x in Path(str(after) + ".err.jsonl").read_text().splitlines()]
    # In input order, each once; CSV cannot hold row 6's extra column "n" (not in the header)
    unwritable = [6] if fmt == "csv" else []
    assert [e["line"] for e in errors] == unwritable + [18, 101, 334, 601, 1112]
    assert errors[len(unwritable)]["text"].startswith("poison") and errors[len(unwritable) + 1]["text"] is None
    if unwritable:
        assert "output row cannot be written" in errors[0]["reason"] and errors[0]["text"] is None
    for rep in (rep_before, rep_after):
        assert rep["records"] == 1200 and rep["failed_records"] == 5 + len(unwritable)
        assert sum(w["records"] for w in rep["per_worker"]) == 1200 - 2  # read errors never reach a worker
    assert rep_after["most_batches_per_task"] > 1 and rep_before["most_batches_per_task"] == 1
    assert rep_after["tasks"] < rep_before["tasks"] and rep_after["batches"] == rep_before["batches"]
    if fmt == "jsonl":
        rows = [json.loads(x) for x in after.read_text(encoding="utf-8").splitlines()]
        assert len(rows) == 1195 and rows[0]["input_length"] == 0 and rows[0]["length"] == len(rows[0]["text"])
        assert rows[5]["n"] == 123456789012345678901234567890  # kept exact (the slow JSON path)
