"""``response_format`` and logprobs through the official ``openai`` client against a real
generate server (SmolLM2-135M): JSON outputs validate against their schemas, an uncompilable
schema is a 400 in OpenAI's error shape, and logprobs come in OpenAI's shapes, streamed equal
to non-streamed."""

from __future__ import annotations

import asyncio
import json
import os

import jsonschema
import openai
import pytest

from conftest import running_server

os.environ.setdefault("HF_HUB_OFFLINE", "1")
NAME = {"type": "string", "maxLength": 24}
SCHEMAS = [
    {"type": "object", "properties": {"sentiment": {"enum": ["positive", "negative", "neutral"]},
                                      "score": {"type": "integer", "minimum": 1, "maximum": 5}},
     "required": ["sentiment", "score"]},
    {"type": "object", "properties": {"user": {"type": "object", "properties": {"name": NAME, "admin": {
        "type": "boolean"}}, "required": ["name", "admin"]}, "tags": {"type": "array", "items": NAME, "maxItems": 3}},
     "required": ["user", "tags"]},
    {"type": "object", "properties": {"city": NAME, "population": {"type": "integer", "minimum": 0,
                                                                   "maximum": 40000000}},
     "required": ["city"]},
]
QUESTIONS = ["Review: the soup was cold.", "Create a user profile.", "Tell me about Lisbon."]


@pytest.fixture(scope="module")
def url():
    threads = int(os.environ.get("PARAINFER_TEST_THREADS", "1"))
    with running_server(task="generate", max_num_seqs=8, threads_per_worker=threads) as base:
        yield base


def fmt(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


def test_chat_json_schema_outputs_validate_when_requests_run_together(url):
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=300)

    async def ask(question: str, schema: dict, seed: int | None):
        sampling = {"temperature": 0.8, "seed": seed} if seed is not None else {"temperature": 0}
        return await client.chat.completions.create(model="m", messages=[{"role": "user", "content": question}],
                                                    response_format=fmt(schema), max_tokens=96, **sampling)

    async def main():
        jobs = [ask(q, s, seed) for q, s in zip(QUESTIONS, SCHEMAS) for seed in (None, 7)]
        jobs.append(client.chat.completions.create(  # a free request in the same batch
            model="m", messages=[{"role": "user", "content": "Say hi."}], max_tokens=8, temperature=0))
        try:
            return await asyncio.gather(*jobs)
        finally:
            await client.close()

    answers = asyncio.run(main())
    schemas = [s for s in SCHEMAS for _ in range(2)]
    for answer, schema in zip(answers, schemas):
        choice = answer.choices[0]
        assert choice.finish_reason == "stop", choice.message.content
        jsonschema.validate(json.loads(choice.message.content), schema)
    assert answers[-1].choices[0].message.content and answers[-1].choices[0].logprobs is None


def test_completions_json_object_for_every_prompt_of_a_request(url):
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=300)
    prompts = ["A JSON object describing a cat: ", "The user record as JSON: "]
    got = client.completions.create(model="m", prompt=prompts, max_tokens=64, temperature=0,
                                    extra_body={"response_format": {"type": "json_object"}})
    assert len(got.choices) == 2
    for choice in got.choices:
        if choice.finish_reason == "stop":
            assert isinstance(json.loads(choice.text), dict)
        else:  # cut by max_tokens: still a prefix of an object
            assert choice.text.startswith("{")
    assert any(c.finish_reason == "stop" for c in got.choices)


def test_a_schema_that_cannot_compile_is_a_400_naming_the_problem(url):
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=60)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}],
                                       response_format=fmt({"type": "object", "properties": {
                                           "n": {"type": "integer", "minimum": 5, "maximum": 1}}}))
    body = err.value.body
    assert err.value.status_code == 400 and body["code"] == "invalid_response_format"
    assert body["param"] == "response_format" and "minimum greater than maximum" in body["message"]
    with pytest.raises(openai.BadRequestError, match="accepted: text, json_object, json_schema"):
        client.completions.create(model="m", prompt="x", extra_body={"response_format": {"type": "xml"}})
    with pytest.raises(openai.BadRequestError, match="top_logprobs must be an integer in 0..20"):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], logprobs=True,
                                       top_logprobs=30)


def test_chat_logprobs_streamed_equal_non_streamed(url):
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=300)
    kwargs = dict(model="m", messages=[{"role": "user", "content": "Name a fruit."}], max_tokens=10, temperature=0,
                  logprobs=True, top_logprobs=3)
    whole = client.chat.completions.create(**kwargs)
    content = whole.choices[0].logprobs.content
    assert len(content) == whole.usage.completion_tokens
    for item in content:
        assert item.logprob <= 0 and len(item.top_logprobs) == 3
        assert item.top_logprobs[0].logprob >= item.logprob - 1e-6  # greedy: the chosen is the most likely
        assert bytes(item.bytes) == item.token.encode()
    streamed = [c for chunk in client.chat.completions.create(stream=True, **kwargs) for choice in chunk.choices
                if choice.logprobs for c in choice.logprobs.content]
    # the second request's prompt comes from the prefix cache (computed in another batch shape):
    # equal tokens, logprobs equal to float rounding
    assert [c.token for c in streamed] == [c.token for c in content]
    assert max(abs(a.logprob - b.logprob) for a, b in zip(streamed, content)) < 1e-4


def test_completion_logprobs_in_the_legacy_shape_streamed_and_not(url):
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=300)
    kwargs = dict(model="m", prompt="The capital of France is", max_tokens=6, temperature=0, logprobs=2)
    whole = client.completions.create(**kwargs).choices[0]
    lp = whole.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 6
    assert "".join(lp.tokens).startswith(whole.text) and lp.text_offset[0] == 0
    assert all(len(top) == 2 and max(top.values()) >= v - 1e-6 for top, v in zip(lp.top_logprobs, lp.token_logprobs))
    chunks = [c.choices[0].logprobs for c in client.completions.create(stream=True, **kwargs)
              if c.choices and c.choices[0].logprobs]
    assert [t for c in chunks for t in c.tokens] == lp.tokens
    assert [o for c in chunks for o in c.text_offset] == lp.text_offset
