"""The official ``openai`` client against a real server running the default embedder (MiniLM, 384-d):
OpenAI's model names, empty inputs, ``dimensions`` (400 unless the model is Matryoshka, then
truncated and renormalised), ``--served-model-name`` aliases."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import openai
import pytest

from conftest import running_server
from parainfer.models.hf_embed import default_embed_model_dir
from parainfer.models.registry import build_predictor

TEXTS = ["The movie was wonderful.", "I hated every minute of it, a complete waste of an evening.",
         "ok", "Parallel inference splits the work across model replicas."]


@pytest.fixture(scope="module")
def embed_url():
    with running_server(task="embed", workers=1) as url:
        yield url


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    predictor = build_predictor("embed")
    predictor.load()
    return np.stack([np.asarray(o["embedding"], dtype=np.float32) for o in predictor.predict(TEXTS)])


def test_openai_client_embeddings_match_the_model_run_directly(embed_url, reference):
    client = openai.OpenAI(base_url=embed_url + "/v1", api_key="unused", max_retries=0)
    result = client.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS)  # base64 on the wire
    assert [d.index for d in result.data] == list(range(len(TEXTS)))
    got = np.array([d.embedding for d in result.data], dtype=np.float32)
    assert got.shape == (4, 384)
    cosine = np.sum(got * reference, axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(reference, axis=1)
    assert np.all(cosine >= 1 - 1e-4), cosine
    assert result.usage.prompt_tokens == result.usage.total_tokens > len(TEXTS)
    assert result.model == "all-MiniLM-L6-v2"


def test_float_and_base64_encodings_decode_to_the_same_float32_bits(embed_url):
    client = openai.OpenAI(base_url=embed_url + "/v1", api_key="unused", max_retries=0)
    floats = client.with_raw_response.embeddings.create(model="m", input=TEXTS, encoding_format="float")
    b64 = client.with_raw_response.embeddings.create(model="m", input=TEXTS, encoding_format="base64")
    default = client.embeddings.create(model="m", input=TEXTS)  # the client asks base64 and decodes it itself
    from_b64 = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4")
                         for d in b64.http_response.json()["data"]])
    from_floats = np.array([d.embedding for d in floats.parse().data], dtype=np.float32)
    from_default = np.array([d.embedding for d in default.data], dtype=np.float32)
    assert from_b64.shape == (len(TEXTS), 384)
    assert np.array_equal(from_floats.view(np.uint32), from_b64.view(np.uint32))
    assert np.array_equal(from_default.view(np.uint32), from_b64.view(np.uint32))
    # each float is written in its shortest float32 form (at most 9 significant digits), not as a
    # 17-digit double, and the answer has a Content-Length (no chunked encoding)
    numbers = re.findall(rb"-?\d+\.\d+(?:e[-+]?\d+)?", floats.http_response.content)
    assert len(numbers) >= len(TEXTS) * 384 and max(len(n.lstrip(b"-0.").split(b"e")[0]) for n in numbers) <= 10
    assert int(floats.http_response.headers["content-length"]) == len(floats.http_response.content)


def test_openai_client_sees_errors_as_typed_exceptions(embed_url):
    client = openai.OpenAI(base_url=embed_url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="input is an empty list; give one text") as err:
        client.embeddings.create(model="m", input=[])
    assert (err.value.body["code"], err.value.body["param"]) == ("empty_input", "input")
    for empty, param in (("", "input"), (["fine", ""], "input.1")):
        with pytest.raises(openai.BadRequestError, match=f"{param} is an empty string") as err:
            client.embeddings.create(model="m", input=empty)
        assert (err.value.body["code"], err.value.body["param"]) == ("empty_input", param)
    with pytest.raises(openai.UnprocessableEntityError):
        client.embeddings.create(model="m", input="x", dimensions=0)


def test_openai_model_names_are_answered_by_the_served_model(embed_url, reference):
    """A client written for OpenAI works unchanged: any ``model`` (one model is served); the
    response names the model that answered. ``dimensions`` on a model not trained for
    truncation is 400, as on vLLM, never a silent 384-d answer."""
    client = openai.OpenAI(base_url=embed_url + "/v1", api_key="unused", max_retries=0)
    got = client.embeddings.create(model="text-embedding-3-small", input=TEXTS[0])
    assert got.model == "all-MiniLM-L6-v2" and len(got.data[0].embedding) == 384
    assert np.allclose(got.data[0].embedding, reference[0], atol=1e-4)
    assert [m.id for m in client.models.list().data] == ["all-MiniLM-L6-v2"]
    with pytest.raises(openai.BadRequestError, match="does not support matryoshka representation") as err:
        client.embeddings.create(model="text-embedding-3-small", input=TEXTS[0], dimensions=64)
    assert (err.value.body["code"], err.value.body["param"]) == ("invalid_dimensions", "dimensions")


@pytest.fixture(scope="module")
def matryoshka_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in MiniLM's files, its config.json saying it was trained for 64, 128 and 384
    dimensions (vLLM's ``matryoshka_dimensions``): how a Matryoshka model directory says so."""
    src, dst = default_embed_model_dir(), tmp_path_factory.mktemp("models") / "minilm-matryoshka"
    dst.mkdir()
    for item in src.iterdir():
        if item.name != "config.json":
            (dst / item.name).symlink_to(item)
    config = json.loads((src / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**config, "matryoshka_dimensions": [64, 128, 384]}))
    return dst


def test_served_model_names_and_matryoshka_dimensions(matryoshka_dir: Path, reference):
    with running_server(task="embed", workers=1, model=str(matryoshka_dir),
                        served_model_names=["my-embedder", "text-embedding-3-small"]) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["my-embedder", "text-embedding-3-small"]
        got = client.embeddings.create(model="text-embedding-3-small", input=TEXTS, dimensions=64)
        assert got.model == "my-embedder"  # the first name is the one responses report
        short = np.array([d.embedding for d in got.data], dtype=np.float32)
        want = reference[:, :64] / np.linalg.norm(reference[:, :64], axis=1, keepdims=True)
        assert short.shape == (4, 64) and np.allclose(np.linalg.norm(short, axis=1), 1.0, atol=1e-5)
        assert np.all(np.sum(short * want, axis=1) >= 1 - 1e-4)
        full = client.embeddings.create(model="my-embedder", input=TEXTS[0])  # no dimensions: the whole vector
        assert len(full.data[0].embedding) == 384
        with pytest.raises(openai.BadRequestError, match=r"only the matryoshka dimensions \[64, 128, 384\]"):
            client.embeddings.create(model="my-embedder", input=TEXTS[0], dimensions=100)
        with pytest.raises(openai.NotFoundError, match="'text-embedding-ada-002' does not exist") as err:
            client.embeddings.create(model="text-embedding-ada-002", input=TEXTS[0])  # names given: only those
        assert (err.value.status_code, err.value.body["code"]) == (404, "model_not_found")
