"""Seeded sampling is reproducible whatever the batch; stop strings; incremental detokenization."""

from __future__ import annotations

import pytest

from parainfer.errors import UsageError
from parainfer.generation import SamplingParams
from parainfer.generation.detokenizer import IncrementalDetokenizer

SAMPLED = SamplingParams(max_tokens=12, temperature=0.9, top_p=0.9, top_k=50, seed=1234, ignore_eos=True)


def test_seeded_request_is_reproducible_whatever_its_batch(make_engine, prompts):
    engine = make_engine()
    [alone] = engine.generate([prompts[1]], SAMPLED)
    others = [SamplingParams(max_tokens=12, temperature=1.0, seed=7), SamplingParams(max_tokens=5)]
    batched = engine.generate([prompts[0], prompts[1], prompts[3]], [others[0], SAMPLED, others[1]])
    assert batched[1].token_ids == alone.token_ids
    [reseeded] = engine.generate([prompts[1]], SamplingParams(**{**vars(SAMPLED), "seed": 99}))
    assert reseeded.token_ids != alone.token_ids


def test_stop_string_cuts_text_and_is_never_streamed(make_engine, prompts):
    engine = make_engine()
    [full] = engine.generate([prompts[0]], SamplingParams(max_tokens=12))
    assert "Paris" in full.text  # "The capital of France is Paris."
    params = SamplingParams(max_tokens=12, stop=["Paris", "never-there"])
    chunks = list(engine.stream(prompts[0], params))
    streamed = "".join(c.new_text for c in chunks)
    assert streamed == full.text[: full.text.index("Paris")]
    assert chunks[-1].finished and chunks[-1].finish_reason == "stop"
    assert all(not c.finished for c in chunks[:-1])
    [res] = engine.generate([prompts[0]], params)
    assert res.text == streamed and res.finish_reason == "stop"


def test_eos_ends_with_stop_and_max_tokens_with_length(make_engine, prompts, hf):
    _, tok = hf
    engine = make_engine()
    short, capped = engine.generate([prompts[0], prompts[1]], [SamplingParams(max_tokens=30), SamplingParams(max_tokens=3)])
    assert short.finish_reason == "stop" and short.token_ids[-1] == tok.eos_token_id
    assert capped.finish_reason == "length" and capped.completion_tokens == 3


def test_incremental_detokenizer_handles_multibyte_characters(hf):
    _, tok = hf
    text = "Héllo wörld 😀 — ça va? 日本語"
    ids = tok.encode(text)
    detok = IncrementalDetokenizer(tok, [], [])
    pieces = []
    for t in ids:
        detok.add_token(t)
        pieces.append(detok.pop_delta(False))
        assert "\ufffd" not in pieces[-1]
    assert "".join(pieces) + detok.pop_delta(True) == tok.decode(ids)


@pytest.mark.parametrize(
    "kwargs", [{"max_tokens": 0}, {"temperature": -1}, {"top_p": 0}, {"top_p": 1.5}, {"top_k": -2}]
)
def test_bad_sampling_params_raise(kwargs):
    with pytest.raises(UsageError):
        SamplingParams(**kwargs)
