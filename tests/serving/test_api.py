"""The HTTP contract on the cheap echo model: shapes, errors, auth, health, metrics, OpenAPI."""

from __future__ import annotations

import httpx
import pytest

from conftest import running_server


def post(url: str, path: str, body: object, **kw: object) -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=30, **kw)


def test_classify_returns_one_result_per_input_in_order(echo_server):
    r = post(echo_server, "/v1/classify", {"input": ["a", "abc", "ab"], "model": "x"})
    assert r.status_code == 200
    body = r.json()
    assert [(d["index"], d["length"]) for d in body["data"]] == [(0, 1), (1, 3), (2, 2)]
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0
    assert post(echo_server, "/v1/classify", {"input": "one text"}).json()["data"] == [{"index": 0, "length": 8}]


@pytest.mark.parametrize("body, status, field", [
    ({"input": [1, 2]}, 422, "input.0"),
    ({"input": []}, 400, "input"),
    ({"input": ""}, 400, "input"),
    ({"input": ["a", ""]}, 400, "input.1"),
    ({"input": "x", "dimensions": 0}, 422, "dimensions"),
    ({"model": "m"}, 422, "input"),
    ({"input": "x", "encoding_format": "hex"}, 422, "encoding_format"),
])
def test_wrong_schema_is_422_naming_the_field(echo_server, body, status, field):
    path = "/v1/embeddings" if "encoding_format" in body or "dimensions" in body else "/v1/classify"
    r = post(echo_server, path, body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == field


def test_malformed_json_is_400(echo_server):
    r = httpx.post(echo_server + "/v1/classify", content=b'{"input": ["a",', headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]


def test_too_many_inputs_and_too_large_body_are_413(echo_server):
    r = post(echo_server, "/v1/classify", {"input": ["a"] * 3000})
    assert r.status_code == 413 and "at most 1024" in r.json()["error"]["message"]
    r = post(echo_server, "/v1/classify", {"input": "x" * (9 << 20)})
    assert r.status_code == 413 and "over the limit" in r.json()["error"]["message"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        yield b'{"input": "'
        for _ in range(10):
            yield b"x" * (1 << 20)
        yield b'"}'
    r = httpx.post(echo_server + "/v1/classify", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_wrong_task_route_is_400(echo_server):
    r = post(echo_server, "/v1/embeddings", {"input": "x", "model": "m"})
    assert r.status_code == 400 and "--task embed" in r.json()["error"]["message"]


def test_models_health_openapi_metrics(echo_server):
    assert httpx.get(echo_server + "/v1/models").json()["data"][0]["id"] == "parainfer.testing:echo"
    health = httpx.get(echo_server + "/health")
    assert health.status_code == 200 and health.json()["replicas_ready"] == 1
    paths = httpx.get(echo_server + "/openapi.json").json()["paths"]
    assert {"/v1/embeddings", "/v1/classify", "/v1/models", "/health", "/metrics"} <= set(paths)
    post(echo_server, "/v1/classify", {"input": ["warm"]})
    text = httpx.get(echo_server + "/metrics").text
    for name in ("parainfer_http_requests_total", "parainfer_http_request_duration_seconds_bucket",
                 "parainfer_queue_depth", "parainfer_batch_size_bucket", "parainfer_batch_tokens_total",
                 "parainfer_replica_busy_seconds_total", "parainfer_replica_restarts_total"):
        assert name in text, name
    assert 'route="/v1/classify",status="200"' in text


def test_api_key_guards_v1_only():
    with running_server(task="classify", model="parainfer.testing:echo", workers=1, api_key="s3cret") as url:
        assert post(url, "/v1/classify", {"input": "a"}).status_code == 401
        assert post(url, "/v1/classify", {"input": "a"}, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert httpx.get(url + "/v1/models").status_code == 401
        ok = post(url, "/v1/classify", {"input": "a"}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert httpx.get(url + "/health").status_code == 200
        assert httpx.get(url + "/metrics").status_code == 200
