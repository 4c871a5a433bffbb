"""The official ``openai`` client against a real server running the default embedder (MiniLM, 384-d)."""

from __future__ import annotations

import base64

import numpy as np
import openai
import pytest

from conftest import running_server
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


def test_float_and_base64_encodings_agree(embed_url):
    client = openai.OpenAI(base_url=embed_url + "/v1", api_key="unused", max_retries=0)
    floats = client.embeddings.create(model="m", input="hello world", encoding_format="float").data[0].embedding
    raw = client.with_raw_response.embeddings.create(model="m", input="hello world", encoding_format="base64")
    b64 = raw.http_response.json()["data"][0]["embedding"]
    decoded = np.frombuffer(base64.b64decode(b64), dtype="<f4")
    assert np.allclose(decoded, np.array(floats, dtype=np.float32), atol=1e-6)


def test_openai_client_sees_errors_as_typed_exceptions(embed_url):
    client = openai.OpenAI(base_url=embed_url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.UnprocessableEntityError):
        client.embeddings.create(model="m", input=[])
