"""The OpenAI batch input format: detection, malformed and duplicate lines, job settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parainfer.config import JobConfig
from parainfer.errors import UsageError
from parainfer.openai.batch_file import BATCH_TASK, is_batch_file, open_batch_source, resolve_job_format
from parainfer.records import Record, RecordError


def line(cid: object, url: str = "/v1/embeddings", body: object = None) -> str:
    return json.dumps({"custom_id": cid, "method": "POST", "url": url, "body": {"input": "x"} if body is None
                       else body}) + "\n"


def test_malformed_and_duplicate_lines_become_record_errors_in_order(tmp_path: Path) -> None:
    src = tmp_path / "batch.jsonl"
    src.write_text(line("a") + "{not json\n" + line(7) + line("b", body=[1]) + line("a") + line("c", url="/v1/x"))
    items = list(open_batch_source(str(src)))
    assert [type(i).__name__ for i in items] == ["Record", "RecordError", "RecordError", "RecordError",
                                                 "RecordError", "Record"]
    assert [i.seq for i in items] == list(range(6))
    first, bad_json, bad_id, bad_body, dup, unknown_url = items
    assert isinstance(first, Record) and first.id == "a" and first.text["body"] == {"input": "x"}
    assert isinstance(bad_json, RecordError) and "not valid JSON" in bad_json.reason and bad_json.line == 2
    assert "custom_id is 7" in bad_id.reason and "non-empty string" in bad_id.reason
    assert "body of custom_id 'b' is list" in bad_body.reason
    assert dup.id == "a" and "duplicate custom_id 'a' (first on line 1)" in dup.reason
    assert isinstance(unknown_url, Record) and unknown_url.text["url"] == "/v1/x"  # answered 400 by the predictor


def test_format_is_detected_from_the_first_line_and_sets_the_batch_task(tmp_path: Path) -> None:
    batch, plain = tmp_path / "batch.jsonl", tmp_path / "plain.jsonl"
    batch.write_text("\n" + line("a"))
    plain.write_text(json.dumps({"id": 1, "text": "hello"}) + "\n")
    assert is_batch_file(str(batch)) and not is_batch_file(str(plain))
    cfg = resolve_job_format(JobConfig(input=str(batch), output=str(tmp_path / "out.jsonl")))
    assert (cfg.task, cfg.id_column, cfg.text_column) == (BATCH_TASK, "id", "body")
    same = JobConfig(input=str(plain), output="o.jsonl")
    assert resolve_job_format(same) is same
    assert resolve_job_format(JobConfig(input=str(batch), output="o.jsonl", input_format="records")).task == "classify"
    with pytest.raises(UsageError, match="--format 'openai' is not known"):
        resolve_job_format(JobConfig(input=str(batch), output="o.jsonl", input_format="openai"))
    with pytest.raises(UsageError, match="writes JSONL results"):
        resolve_job_format(JobConfig(input=str(batch), output="o.csv"))
