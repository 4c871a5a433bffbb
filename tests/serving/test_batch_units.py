"""Files and batch records on disk without a server: owner scoping, idempotent adoption,
and how each input line of a batch is planned."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parainfer.serving.batch_api.batches import BatchStore, plan_line
from parainfer.openai.errors import ApiError
from parainfer.serving.batch_api.files import FileStore

OUTPUT_ID = "file-0123456789abcdef01234567-output"  # the id a batch's output file gets


def test_files_belong_to_their_key_and_adoption_is_idempotent(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "files")
    src = tmp_path / "out.jsonl"
    src.write_text("{}\n")
    made = store.adopt(src, "out.jsonl", "batch_output", owner="key-a", file_id=OUTPUT_ID)
    assert made["bytes"] == 3 and not src.exists() and "owner" not in made
    assert store.adopt(src, "out.jsonl", "batch_output", owner="key-a", file_id=OUTPUT_ID) == made
    with pytest.raises(ApiError, match=f"no file with id '{OUTPUT_ID}'") as err:
        store.get(OUTPUT_ID, owner="key-b")
    assert err.value.status == 404
    assert store.list("key-b") == [] and [f["id"] for f in store.list("key-a")] == [OUTPUT_ID]
    with pytest.raises(ApiError):
        store.get(f"../files/{OUTPUT_ID}", owner="key-a")
    store.delete(OUTPUT_ID, owner="key-a")
    assert store.list("key-a") == []


@pytest.mark.parametrize("bad", ["x" * 300, "../batches", "..", "", "file-" + "a" * 24 + "\n", "batch_" + "é" * 24])
def test_an_id_the_server_never_issued_is_404_before_the_disk(tmp_path: Path, bad: str) -> None:
    files, batches = FileStore(tmp_path / "files"), BatchStore(tmp_path / "batches")
    for store, code in ((files, "file_not_found"), (batches, "batch_not_found")):
        with pytest.raises(ApiError) as err:
            store.get(bad, owner="")
        assert err.value.status == 404 and err.value.code == code
    assert batches.load(bad) is None


def test_each_line_is_planned_as_a_call_or_an_immediate_answer() -> None:
    seen: dict[str, int] = {}

    def plan(row: object, line: int) -> tuple:
        raw = row if isinstance(row, bytes) else json.dumps(row).encode()
        return plan_line(raw, line, "/v1/embeddings", seen)

    ok = {"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}}
    assert plan(ok, 1) == ("call", "a", {"input": "x"})
    openai_named = {**ok, "custom_id": "m", "body": {"input": "x", "model": "text-embedding-3-small"}}
    assert plan(openai_named, 2)[0] == "call"  # the endpoint answers for its model, as online
    kind, good, line = plan(ok, 3)
    assert (kind, good, line["response"]) == ("done", False, None) and "first on line 1" in line["error"]["message"]
    assert plan(b"[1, 2]", 3)[2]["error"]["message"] == "line 3 is not a JSON object"
    assert plan(b"{oops", 4)[2]["error"]["code"] == "invalid_json"
    for row, param in [({**ok, "custom_id": "u", "url": "/v1/completions"}, "url"),
                       ({**ok, "custom_id": "g", "method": "GET"}, "method"),
                       ({**ok, "custom_id": "s", "body": {"input": "x", "stream": True}}, "stream")]:
        kind, good, line = plan(row, 5)
        assert line["response"]["status_code"] == 400 and line["response"]["body"]["error"]["param"] == param
