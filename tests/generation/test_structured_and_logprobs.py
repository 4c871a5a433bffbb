"""Structured output (JSON schema token masks) and logprobs in the engine, on SmolLM2-135M.

Constrained and free sequences run in one batch: every constrained output that ends with
"stop" parses and validates against its schema (jsonschema), free greedy outputs are the same
as when they run alone (masks stay in their row). Logprobs equal log-softmax of Hugging Face's
logits for the same tokens (fp32, 1e-4), for free and constrained sequences.
"""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch

from parainfer.errors import UsageError
from parainfer.generation import SamplingParams

NAME = {"type": "string", "maxLength": 24}
SCHEMAS = {
    "enum": {"type": "object", "properties": {"sentiment": {"enum": ["positive", "negative", "neutral"]}},
             "required": ["sentiment"]},
    "nested": {"type": "object", "properties": {
        "person": {"type": "object", "properties": {"name": NAME, "age": {"type": "integer", "minimum": 0,
                                                                          "maximum": 120}},
                   "required": ["name", "age"]},
        "city": NAME}, "required": ["person", "city"]},
    "array": {"type": "object", "properties": {
        "fruits": {"type": "array", "items": NAME, "minItems": 1, "maxItems": 3},
        "count": {"type": "integer", "minimum": 1, "maximum": 3}}, "required": ["fruits", "count"]},
    "array_of_objects": {"type": "object", "properties": {"items": {
        "type": "array", "maxItems": 2, "items": {"type": "object", "properties": {
            "name": NAME, "price": {"type": "number", "minimum": 0, "maximum": 1000}, "in_stock": {"type": "boolean"}},
            "required": ["name", "price", "in_stock"]}}}, "required": ["items"]},
    "optional_fields": {"type": "object", "properties": {"title": NAME, "year": {"type": "integer", "minimum": 1000,
                                                                                "maximum": 2100},
                                                         "genre": {"enum": ["drama", "comedy", "documentary"]}},
                        "required": ["title", "genre"]},
}
QUESTIONS = ["Describe the weather today.", "Tell me about a friend of yours.", "What did you buy at the market?",
             "Recommend a film.", "How do you feel about Mondays?", "Summarise the news."]


def rf(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}


def test_constrained_and_free_sequences_share_a_batch_and_every_json_validates(make_engine):
    engine = make_engine(max_num_seqs=32)
    chats = [engine.format_chat([{"role": "user", "content": q}]) for q in QUESTIONS]
    prompts, params, schemas = [], [], []
    for k, (name, schema) in enumerate(SCHEMAS.items()):
        for j in range(2):  # greedy, and a seeded sample
            sampled = dict(temperature=0.9, seed=10 * k + j) if j else {}
            prompts.append(chats[(k + j) % len(chats)])
            params.append(SamplingParams(max_tokens=96, response_format=rf(schema), **sampled))
            schemas.append(schema)
    for q in ("Reply in JSON: give the name and age of a person.",):
        prompts.append(engine.format_chat([{"role": "user", "content": q}]))  # json_object: any object
        params.append(SamplingParams(max_tokens=96, response_format={"type": "json_object"}))
        schemas.append({"type": "object"})
    free = [chats[3], chats[4]]
    results = engine.generate(prompts + free, params + [SamplingParams(max_tokens=24)] * 2)
    for res, schema in zip(results, schemas):
        assert res.finish_reason == "stop", (schema, res.text)  # the grammar accepted, then EOS
        assert res.token_ids[-1] in engine.eos_token_ids
        jsonschema.validate(json.loads(res.text), schema)
    assert engine.stats["steps"] < sum(r.completion_tokens for r in results)  # they were batched
    alone = engine.generate(free, SamplingParams(max_tokens=24))
    assert [r.token_ids for r in results[-2:]] == [r.token_ids for r in alone]


def test_a_schema_the_library_cannot_compile_is_a_usage_error_naming_it(make_engine):
    engine = make_engine()
    with pytest.raises(UsageError, match='Unsupported type "colour"'):
        engine.generate(["hi"], SamplingParams(response_format=rf({"type": "colour"})))
    with pytest.raises(UsageError, match="accepted: text, json_object, json_schema"):
        SamplingParams(response_format={"type": "yaml"})
    with pytest.raises(UsageError, match="json_schema.schema"):
        SamplingParams(response_format={"type": "json_schema", "json_schema": {"name": "x"}})
    with pytest.raises(UsageError, match="0..20"):
        SamplingParams(logprobs=21)


def test_logprobs_equal_log_softmax_of_hf_logits(make_engine, hf, prompts):
    model, _ = hf
    engine = make_engine()
    params = [SamplingParams(max_tokens=12, logprobs=5), SamplingParams(max_tokens=12, logprobs=0),
              SamplingParams(max_tokens=40, logprobs=3, response_format=rf(SCHEMAS["enum"])),
              SamplingParams(max_tokens=12, temperature=1.0, seed=3, logprobs=2)]
    results = engine.generate(prompts[:4], params)
    for ids, p, res in zip(prompts, params, results):
        assert len(res.logprobs) == res.completion_tokens
        full = torch.tensor([ids + res.token_ids[:-1]])
        with torch.inference_mode():
            ref = torch.log_softmax(model(full).logits[0, len(ids) - 1:].float(), dim=-1)
        got = torch.tensor([e.logprob for e in res.logprobs])
        want = ref[torch.arange(len(res.token_ids)), torch.tensor(res.token_ids)]
        assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
        for row, entry in zip(ref, res.logprobs):
            assert len(entry.top) == p.logprobs
            if entry.top:
                values, top_ids = torch.topk(row, p.logprobs)
                assert torch.allclose(torch.tensor([lp for _, lp in entry.top]), values, atol=1e-4)
                assert [t for t, _ in entry.top][:1] == top_ids.tolist()[:1]
    assert results[2].finish_reason == "stop" and json.loads(results[2].text)["sentiment"]


def test_streamed_outputs_carry_one_logprob_per_new_token(make_engine, prompts):
    engine = make_engine()
    outs = list(engine.stream(prompts[0], SamplingParams(max_tokens=8, logprobs=1)))
    assert all(len(o.new_logprobs) == len(o.new_token_ids) for o in outs)
    assert [e.token_id for o in outs for e in o.new_logprobs] == [t for o in outs for t in o.new_token_ids]
    assert all(o.new_logprobs is None for o in engine.stream(prompts[0], SamplingParams(max_tokens=2)))
