"""The official ``openai`` client drives /v1/files and /v1/batches on a real embedding server:
upload, create, poll, download, cancel; limits and bad input answer OpenAI-style errors; a
server SIGKILLed mid-batch resumes it after a restart, each result written exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import openai
import pytest

from conftest import free_port, running_server

KEY = "batch-test-key"


def batch_lines(n: int, inputs: int = 1, prefix: str = "r") -> list[str]:
    return [json.dumps({"custom_id": f"{prefix}{i}", "method": "POST", "url": "/v1/embeddings",
                        "body": {"model": "all-MiniLM-L6-v2", "input": [f"text {i} part {j}" for j in range(inputs)]
                                 if inputs > 1 else f"request number {i}"}}) for i in range(n)]


def wait_done(client: openai.OpenAI, batch_id: str, timeout_s: float = 300) -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "cancelled", "expired"):
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}"
        time.sleep(0.2)


# a key file of two clients (alpha has two keys: one name, one owner) next to the environment key KEY
KEY_FILE = "# batch tests\nkey-alpha alpha\nkey-beta\nkey-alpha-2 alpha\n"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """The embedding server: its URL and its app (to read the online-load state)."""
    data = tmp_path_factory.mktemp("data")
    (data / "keys").write_text(KEY_FILE)
    apps: list = []
    with running_server(task="embed", workers=1, api_key=KEY, api_keys_file=str(data / "keys"), data_dir=str(data),
                        max_file_mb=0.25, max_batch_lines=300, on_app=apps.append) as url:
        yield url, apps[0]


@pytest.fixture(scope="module")
def server(served):
    url, _ = served
    return url, openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)


def client_of(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


def test_upload_create_poll_download_with_per_line_errors(server, tmp_path: Path) -> None:
    url, client = server
    lines = batch_lines(6)
    lines.insert(2, "{not json")
    lines.append(json.dumps({"custom_id": "r1", "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}}))
    lines.append(json.dumps({"custom_id": "chat", "method": "POST", "url": "/v1/chat/completions",
                             "body": {"messages": [{"role": "user", "content": "hi"}]}}))
    lines.append(json.dumps({"custom_id": "gpt", "method": "POST", "url": "/v1/embeddings",
                             "body": {"model": "text-embedding-3-small", "input": "x"}}))
    src = tmp_path / "batch.jsonl"
    src.write_text("\n".join(lines) + "\n")
    uploaded = client.files.create(file=src.open("rb"), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes == src.stat().st_size
    assert client.files.content(uploaded.id).read() == src.read_bytes()
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h",
                                  metadata={"job": "test"})
    assert batch.status == "validating" and batch.metadata == {"job": "test"}
    done = wait_done(client, batch.id)
    assert done.status == "completed" and done.in_progress_at and done.finalizing_at and done.completed_at
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (10, 7, 3)
    out = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
    assert [r["custom_id"] for r in out] == [f"r{i}" for i in range(6)] + ["gpt"]  # input order
    assert out[-1]["response"]["body"]["model"] == "all-MiniLM-L6-v2"  # OpenAI's model name: the served model answers
    online = httpx.post(url + "/v1/embeddings", json={"input": "request number 3"},
                        headers={"Authorization": f"Bearer {KEY}"}).json()
    body = out[3]["response"]["body"]
    assert out[3]["response"]["status_code"] == 200 and out[3]["error"] is None
    assert set(body) == set(online) and body["usage"] == online["usage"] and body["model"] == online["model"]
    assert np.allclose(body["data"][0]["embedding"], online["data"][0]["embedding"], atol=1e-5)
    errors = [json.loads(x) for x in client.files.content(done.error_file_id).text.splitlines()]
    assert [e["custom_id"] for e in errors] == [None, "r1", "chat"]
    assert errors[0]["error"]["code"] == "invalid_json" and errors[0]["error"]["line"] == 3
    assert "duplicate custom_id 'r1'" in errors[1]["error"]["message"]
    assert errors[2]["response"]["status_code"] == 400 and errors[2]["response"]["body"]["error"]["param"] == "url"
    assert done.id in [b.id for b in client.batches.list(limit=10).data]
    assert client.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)


def test_cancel_limits_and_bad_requests(server, tmp_path: Path) -> None:
    _, client = server
    big, small = tmp_path / "big.jsonl", tmp_path / "small.jsonl"
    big.write_text("\n".join(batch_lines(40, prefix="b")) + "\n")
    small.write_text("\n".join(batch_lines(3, prefix="s")) + "\n")
    first = client.batches.create(input_file_id=client.files.create(file=big.open("rb"), purpose="batch").id,
                                  endpoint="/v1/embeddings", completion_window="24h")
    second = client.batches.create(input_file_id=client.files.create(file=small.open("rb"), purpose="batch").id,
                                   endpoint="/v1/embeddings", completion_window="24h")
    assert client.batches.cancel(second.id).status == "cancelling"  # queued behind the first: none of it ran
    cancelled = wait_done(client, second.id)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at and cancelled.request_counts.completed == 0
    done = wait_done(client, first.id)
    assert done.status == "completed" and done.request_counts.completed == 40
    with pytest.raises(openai.BadRequestError, match="only a validating or in_progress batch"):
        client.batches.cancel(first.id)
    file_id = client.files.create(file=small.open("rb"), purpose="batch").id
    for kwargs, message in [
        (dict(input_file_id=done.output_file_id, endpoint="/v1/embeddings"), "purpose 'batch_output'"),
        (dict(input_file_id=file_id, endpoint="/v1/responses"), "endpoint '/v1/responses' is not supported"),
        (dict(input_file_id=file_id, endpoint="/v1/chat/completions"), "not served by this server"),
        (dict(input_file_id="file-nope", endpoint="/v1/embeddings"), "no file with id 'file-nope'"),
    ]:
        with pytest.raises(openai.BadRequestError, match=message):
            client.batches.create(completion_window="24h", **kwargs)
    many = tmp_path / "many.jsonl"
    many.write_text("\n".join(batch_lines(301)) + "\n")
    with pytest.raises(openai.BadRequestError, match="301 requests, over the limit of 300"):
        client.batches.create(input_file_id=client.files.create(file=many.open("rb"), purpose="batch").id,
                              endpoint="/v1/embeddings", completion_window="24h")
    huge = tmp_path / "huge.jsonl"
    huge.write_text("\n".join(batch_lines(3000)) + "\n")  # > 0.25 MB
    with pytest.raises(openai.APIStatusError, match="--max-file-mb") as err:
        client.files.create(file=huge.open("rb"), purpose="batch")
    assert err.value.status_code == 413
    with pytest.raises(openai.BadRequestError, match="purpose 'fine-tune' is not supported"):
        client.files.create(file=small.open("rb"), purpose="fine-tune")


def small_batch(client: openai.OpenAI, tmp_path: Path, prefix: str, **kwargs: object) -> object:
    src = tmp_path / f"{prefix}.jsonl"
    src.write_text("\n".join(batch_lines(2, prefix=prefix)) + "\n")
    file_id = client.files.create(file=src.open("rb"), purpose="batch").id
    return client.batches.create(input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h", **kwargs)


def test_each_key_owns_its_files_and_batches_whatever_the_scheme_spelling(server, tmp_path: Path) -> None:
    url, env_client = server
    alpha, beta = client_of(url, "key-alpha"), client_of(url, "key-beta")
    batch = small_batch(alpha, tmp_path, "own")
    done = wait_done(alpha, batch.id)
    assert done.status == "completed" and done.request_counts.completed == 2
    mine = [batch.input_file_id, done.output_file_id]
    for other in (beta, env_client):  # another key of the file, and the environment key
        for file_id in mine:
            for call in (other.files.retrieve, other.files.content, other.files.delete):
                with pytest.raises(openai.NotFoundError):
                    call(file_id)
        with pytest.raises(openai.NotFoundError):
            other.batches.retrieve(batch.id)
        with pytest.raises(openai.NotFoundError):
            other.batches.cancel(batch.id)
        with pytest.raises(openai.BadRequestError, match="no file with id"):
            other.batches.create(input_file_id=batch.input_file_id, endpoint="/v1/embeddings",
                                 completion_window="24h")
        assert not set(mine) & {f.id for f in other.files.list()}
        assert batch.id not in [b.id for b in other.batches.list(limit=100).data]
    # the scheme is case-insensitive and the owner comes from the key: every spelling sees the same objects
    for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
        headers = {"Authorization": f"{scheme}  key-alpha"}
        got = httpx.get(f"{url}/v1/batches/{batch.id}", headers=headers)
        assert got.status_code == 200 and got.json()["output_file_id"] == done.output_file_id, scheme
        listed = httpx.get(url + "/v1/files", headers=headers).json()["data"]
        assert set(mine) <= {f["id"] for f in listed}, scheme
    rotated = client_of(url, "key-alpha-2")  # the same name: the same owner
    assert rotated.files.content(done.output_file_id).text == alpha.files.content(done.output_file_id).text
    assert rotated.files.delete(batch.input_file_id).deleted


def test_a_batch_written_for_openai_runs_on_both_replicas(tmp_path: Path) -> None:
    """300 lines with OpenAI's model name on a 2-worker server: every line answered by the
    served model, and both replicas do the work (idle replicas share the waiting inputs)."""
    src = tmp_path / "openai.jsonl"
    src.write_text("".join(json.dumps({"custom_id": f"q{i}", "method": "POST", "url": "/v1/embeddings", "body": {
        "model": "text-embedding-3-small", "input": f"request number {i} " * (1 + i % 7)}}) + "\n"
        for i in range(300)))
    with running_server(task="embed", workers=2, data_dir=str(tmp_path / "data")) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        batch = client.batches.create(input_file_id=client.files.create(file=src.open("rb"), purpose="batch").id,
                                      endpoint="/v1/embeddings", completion_window="24h")
        done = wait_done(client, batch.id)
        busy = [r["busy_s"] for r in httpx.get(url + "/health").json()["replica_state"]]
        out = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
    assert done.status == "completed" and done.request_counts.completed == 300 and done.error_file_id is None
    assert [r["custom_id"] for r in out] == [f"q{i}" for i in range(300)]
    assert {r["response"]["body"]["model"] for r in out} == {"all-MiniLM-L6-v2"}
    assert min(busy) > 0.2 * max(busy) > 0, busy  # both replicas worked (one did it all before)


HEX = "0123456789abcdef01234567"
# ("." and ".." alone are not here: an HTTP client resolves them as dot segments before sending)
BAD_IDS = ["x" * 300, f"file-{HEX}" + "0" * 280, f"batch_{HEX}" + "0" * 280, "../x", "...", "file-",
           f"file-{HEX}.json", f"file-{HEX.upper()}", f"batch-{HEX}", f"file_{HEX}", "é" * 150, f"file-{HEX[:-1]}é",
           "\x00", "%ff", "..%2f..%2fserver.lock", "file-%00"]


@pytest.mark.parametrize("method, template", [
    ("GET", "/v1/files/{}"), ("GET", "/v1/files/{}/content"), ("DELETE", "/v1/files/{}"),
    ("GET", "/v1/batches/{}"), ("POST", "/v1/batches/{}/cancel"),
])
def test_an_id_the_server_did_not_issue_is_404_on_every_route(server, method: str, template: str) -> None:
    url, _ = server
    issued_elsewhere = [f"batch_{HEX}"] if "files" in template else [f"file-{HEX}", f"file-{HEX}-output"]
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as http:
        for bad in BAD_IDS + issued_elsewhere:
            quoted = bad if "%" in bad else quote(bad, safe="")  # "%ff" and the like go as raw bytes
            r = http.request(method, template.format(quoted))
            assert r.status_code == 404, (bad, r.status_code, r.text[:200])
            assert r.json()["error"]["type"] == "not_found_error", bad


def test_bad_ids_through_the_openai_client_and_in_body_fields(server) -> None:
    _, client = server
    for bad in ("x" * 300, f"batch_{HEX}", "é" * 150):
        with pytest.raises(openai.NotFoundError, match="no file with id"):
            client.files.retrieve(bad)
    for bad in ("x" * 300, f"file-{HEX}", "é" * 150):
        with pytest.raises(openai.NotFoundError, match="no batch with id"):
            client.batches.retrieve(bad)
        with pytest.raises(openai.NotFoundError):
            client.batches.cancel(bad)
    for bad in ("x" * 300, "../x", "é" * 150, f"batch_{HEX}"):
        with pytest.raises(openai.BadRequestError, match="no file with id") as err:
            client.batches.create(input_file_id=bad, endpoint="/v1/embeddings", completion_window="24h")
        assert err.value.body["param"] == "input_file_id"
    for bad in ("x" * 300, "../x", "é" * 150, f"file-{HEX}"):
        with pytest.raises(openai.BadRequestError, match="is not a batch id") as err:
            client.batches.list(after=bad)
        assert err.value.body["param"] == "after"
    assert client.batches.list(after=f"batch_{HEX}").data == []  # well formed but unknown: an empty page


def test_metadata_over_openai_limits_is_400_naming_the_limit(server, tmp_path: Path) -> None:
    _, client = server
    for metadata, message in [
        ({f"k{i}": "v" for i in range(17)}, "metadata has 17 keys; at most 16"),
        ({"k" * 65: "v"}, "65 characters; keys of at most 64"),
        ({"k": "v" * 513}, "513 characters; values of at most 512"),
    ]:
        with pytest.raises(openai.BadRequestError, match=message) as err:
            small_batch(client, tmp_path, "meta", metadata=metadata)
        assert err.value.body["param"] == "metadata"
    widest = {f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)}
    batch = small_batch(client, tmp_path, "meta", metadata=widest)
    assert batch.metadata == widest
    assert wait_done(client, batch.id).status == "completed"


def test_the_lane_is_the_servers_own_state_not_a_client_header(served, server, tmp_path: Path) -> None:
    url, app = served
    _, client = server
    load = app.state.batch_api.load
    before = load.last_active
    batch = small_batch(client, tmp_path, "lane")
    assert wait_done(client, batch.id).request_counts.completed == 2
    assert load.last_active == before  # the runner's own calls are not online load
    r = httpx.post(url + "/v1/embeddings", json={"input": "a client claiming the batch lane"},
                   headers={"Authorization": f"Bearer {KEY}", "x-parainfer-lane": "batch"})
    assert r.status_code == 200
    assert load.last_active > before and load.in_flight == 0  # counted as online while it ran


def serve(data: Path, port: int, key: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-m", "parainfer.cli", "serve", "--task", "embed", "--workers", "1",
                             "--port", str(port), "--data-dir", str(data), "--api-key", key,
                             "--batch-concurrency", "1", "--log-level", "warning"],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_healthy(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        try:
            if httpx.get(url + "/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not become healthy"
        time.sleep(0.1)


LINES = 300


def test_a_server_killed_mid_batch_resumes_it_exactly_once(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    url, src = f"http://127.0.0.1:{port}", tmp_path / "batch.jsonl"
    # long enough that the kill lands mid-batch on a fast CPU too (30 lines of 16 inputs finished
    # within the first 0.5 s commit period on an AMX Xeon)
    src.write_text("\n".join(batch_lines(LINES, inputs=4)) + "\n")
    proc = serve(data, port, KEY)
    try:
        wait_healthy(url, proc)
        client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
        batch = client.batches.create(input_file_id=client.files.create(file=src.open("rb"), purpose="batch").id,
                                      endpoint="/v1/embeddings", completion_window="24h")
        deadline = time.monotonic() + 120
        while client.batches.retrieve(batch.id).request_counts.completed < 3:  # some results committed
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the server and its worker, no shutdown
        proc.wait()
    record = json.loads((data / "batches" / batch.id / "batch.json").read_text())
    assert record["status"] == "in_progress" and 3 <= record["progress"]["next_line"] < LINES, record["progress"]
    proc = serve(data, port, KEY)
    try:
        wait_healthy(url, proc)
        done = wait_done(client, batch.id)
        assert done.status == "completed" and done.request_counts.completed == LINES and done.error_file_id is None
        rows = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
        assert [r["custom_id"] for r in rows] == [f"r{i}" for i in range(LINES)]  # each once, in order
        assert all(len(r["response"]["body"]["data"]) == 4 for r in rows)
        other = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
        assert other.files.retrieve(done.output_file_id).purpose == "batch_output"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
