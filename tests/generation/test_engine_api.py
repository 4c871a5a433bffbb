"""Engine API around the step loop: chat prompts, context-window checks, abort, the server loop."""

from __future__ import annotations

import asyncio

import pytest

from parainfer.errors import UsageError
from parainfer.generation import EngineLoop, SamplingParams


def test_format_chat_matches_the_chat_template(make_engine, prompts):
    engine = make_engine()
    assert engine.format_chat([{"role": "user", "content": "What is the capital of France?"}]) == prompts[0]


def test_prompt_plus_max_tokens_beyond_context_is_rejected(make_engine):
    engine = make_engine(max_model_len=32)
    assert engine.max_model_len == 32
    with pytest.raises(UsageError, match="context window of 32"):
        engine.add_request(list(range(1, 31)), SamplingParams(max_tokens=3))
    with pytest.raises(UsageError, match="empty"):
        engine.add_request([], SamplingParams())


def test_abort_frees_the_request(make_engine, prompts):
    engine = make_engine()
    rid = engine.add_request(prompts[0], SamplingParams(max_tokens=50, ignore_eos=True))
    engine.step()
    engine.abort_request(rid)
    [out] = engine.step()
    assert out.request_id == rid and out.finished and out.finish_reason == "abort"
    assert not engine.has_unfinished()
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks


def test_engine_loop_serves_threads_and_asyncio(make_engine, prompts):
    engine = make_engine()
    [ref] = engine.generate([prompts[2]], SamplingParams(max_tokens=8))
    with EngineLoop(engine) as loop:
        outs = list(loop.submit(prompts[2], SamplingParams(max_tokens=8)))
        assert "".join(o.new_text for o in outs) == ref.text and outs[-1].finished

        async def collect() -> str:
            return "".join([o.new_text async for o in loop.stream_async(prompts[2], SamplingParams(max_tokens=8))])

        assert asyncio.run(collect()) == ref.text


def test_engine_loads_a_model_directory(model_dir, make_engine, prompts):
    from parainfer.generation import LLMEngine, ensure_smollm2

    assert ensure_smollm2() == model_dir and (model_dir / "model.safetensors").exists()  # cached
    engine = LLMEngine(model_dir, num_blocks=32)
    params = SamplingParams(max_tokens=4)
    assert engine.generate([prompts[2]], params)[0].token_ids == make_engine().generate([prompts[2]], params)[0].token_ids
    with pytest.raises(UsageError, match="config.json"):
        LLMEngine(model_dir / "missing")
