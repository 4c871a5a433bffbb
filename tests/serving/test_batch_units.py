"""Files and batch records on disk without a server: owner scoping, idempotent adoption,
and how each input line of a batch is planned."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parainfer.serving.batch_api.batches import plan_line
from parainfer.openai.errors import ApiError
from parainfer.serving.batch_api.files import FileStore


def test_files_belong_to_their_key_and_adoption_is_idempotent(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "files")
    src = tmp_path / "out.jsonl"
    src.write_text("{}\n")
    made = store.adopt(src, "out.jsonl", "batch_output", owner="key-a", file_id="file-x-output")
    assert made["bytes"] == 3 and not src.exists() and "owner" not in made
    assert store.adopt(src, "out.jsonl", "batch_output", owner="key-a", file_id="file-x-output") == made
    with pytest.raises(ApiError, match="no file with id 'file-x-output'") as err:
        store.get("file-x-output", owner="key-b")
    assert err.value.status == 404
    assert store.list("key-b") == [] and [f["id"] for f in store.list("key-a")] == ["file-x-output"]
    with pytest.raises(ApiError):
        store.get("../files/file-x-output", owner="key-a")
    store.delete("file-x-output", owner="key-a")
    assert store.list("key-a") == []


def test_each_line_is_planned_as_a_call_or_an_immediate_answer() -> None:
    seen: dict[str, int] = {}

    def plan(row: object, line: int) -> tuple:
        raw = row if isinstance(row, bytes) else json.dumps(row).encode()
        return plan_line(raw, line, "/v1/embeddings", seen, lambda url, model: model in ("", "all-minilm-l6-v2"))

    ok = {"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}}
    assert plan(ok, 1) == ("call", "a", {"input": "x"})
    kind, good, line = plan(ok, 2)
    assert (kind, good, line["response"]) == ("done", False, None) and "first on line 1" in line["error"]["message"]
    assert plan(b"[1, 2]", 3)[2]["error"]["message"] == "line 3 is not a JSON object"
    assert plan(b"{oops", 4)[2]["error"]["code"] == "invalid_json"
    for row, param in [({**ok, "custom_id": "u", "url": "/v1/completions"}, "url"),
                       ({**ok, "custom_id": "m", "body": {"input": "x", "model": "ada"}}, "model"),
                       ({**ok, "custom_id": "g", "method": "GET"}, "method"),
                       ({**ok, "custom_id": "s", "body": {"input": "x", "stream": True}}, "stream")]:
        kind, good, line = plan(row, 5)
        assert line["response"]["status_code"] == 400 and line["response"]["body"]["error"]["param"] == param
