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


# ---- numerical safety: every value the API accepts gives a valid token -----------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from parainfer.generation.sampler import sample  # noqa: E402
from parainfer.generation.sampling_params import SEED_MAX, SEED_MIN  # noqa: E402
from parainfer.generation.sequence import Sequence  # noqa: E402

VOCAB = 64
tiny_or_any = st.one_of(st.sampled_from([5e-324, 1e-300, 1e-50, 1e-8, 1e-5, 1e-4]), st.floats(0, 2))
logit_rows = st.one_of(
    st.lists(st.floats(-1e4, 1e4), min_size=VOCAB, max_size=VOCAB),
    st.lists(st.sampled_from([0.0, 3e38, -3e38, float("-inf"), float("inf"), float("nan")]),
             min_size=VOCAB, max_size=VOCAB),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(row=logit_rows, temperature=tiny_or_any,
       top_p=st.one_of(st.sampled_from([5e-324, 1e-50, 1e-40, 1e-8]), st.floats(0, 1, exclude_min=True)),
       top_k=st.integers(-1, VOCAB + 5), seed=st.one_of(st.none(), st.integers(SEED_MIN, SEED_MAX)))
def test_sampling_never_fails_over_the_accepted_ranges(row, temperature, top_p, top_k, seed):
    import torch

    params = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)
    seq = Sequence("r", [1], params, IncrementalDetokenizer(None, [], []))
    [token] = sample(torch.tensor([row]), [seq])
    assert isinstance(token, int) and 0 <= token < VOCAB
    moderate = all(abs(x) <= 1e4 for x in row)  # (NaN fails the test too)
    if moderate and (temperature < 1e-5 or top_p <= 1e-40):  # greedy, or a nucleus of one token
        as_f32 = torch.tensor(row)
        assert as_f32[token] == as_f32.max()


@pytest.mark.parametrize("seed", [SEED_MAX + 1, SEED_MIN - 1, 2**70])
def test_a_seed_beyond_64_bits_is_refused(seed):
    with pytest.raises(UsageError, match="seed"):
        SamplingParams(temperature=1.0, seed=seed)
