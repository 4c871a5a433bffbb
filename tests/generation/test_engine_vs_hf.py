"""Greedy outputs of the engine equal Hugging Face ``generate`` run on each prompt alone (fp32).

Covers: prompts of different lengths batched together, requests joining mid-flight, chunked
prefill (a token budget smaller than the prompts), and preemption (a KV cache too small for all
sequences, so the newest is evicted and recomputed).
"""

from __future__ import annotations

import torch

from parainfer.generation import SamplingParams
from parainfer.generation.attention import AttentionMetadata
from parainfer.generation.kv_cache import KVCache

MAX_TOKENS = 16


def test_prefill_logits_match_hf(hf, make_engine, prompts):
    model, _ = hf
    engine = make_engine(num_blocks=16)
    ids = prompts[3]
    n = len(ids)
    m = engine.model
    kv = KVCache(m.num_layers, 16, 16, m.num_kv_heads, m.head_dim)
    meta = AttentionMetadata(torch.arange(n), 0, None, None, [(0, n, 0, None)])
    with torch.inference_mode():
        ours = m.forward(torch.tensor(ids), torch.arange(n), meta, kv, torch.arange(n))
        ref = model(torch.tensor([ids])).logits[0]
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, atol=2e-4, rtol=1e-4)


def test_batched_greedy_equals_hf_alone(make_engine, prompts, hf_greedy):
    engine = make_engine()
    results = engine.generate(prompts, SamplingParams(max_tokens=MAX_TOKENS))
    for ids, res in zip(prompts, results):
        assert res.token_ids == hf_greedy(ids, MAX_TOKENS)
        assert res.prompt_tokens == len(ids)
        assert res.completion_tokens == len(res.token_ids)
        assert res.finish_reason in ("stop", "length")
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks


def test_requests_joining_mid_flight(make_engine, prompts, hf_greedy):
    engine = make_engine()
    params = SamplingParams(max_tokens=MAX_TOKENS)
    tokens: dict[str, list[int]] = {}
    order = {}
    schedule = {0: [0, 1], 3: [2], 5: [3, 4]}  # step number -> prompts that arrive then
    step = 0
    while step <= max(schedule) or engine.has_unfinished():
        for i in schedule.get(step, []):
            order[engine.add_request(prompts[i], params)] = i
        for out in engine.step():
            tokens.setdefault(out.request_id, []).extend(out.new_token_ids)
        step += 1
    assert len(tokens) == len(prompts)
    for rid, i in order.items():
        assert tokens[rid] == hf_greedy(prompts[i], MAX_TOKENS), f"prompt {i}"
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks


def test_chunked_prefill_keeps_outputs_exact(make_engine, prompts, hf_greedy, record_chunks):
    # A 24-token budget cuts the 37..70-token chat prompts into 2-4 chunks of odd sizes, prefilled
    # across steps while the other sequences decode; greedy tokens still equal HF's.
    engine = make_engine(max_num_batched_tokens=24, block_size=4)
    chunks = record_chunks(engine)
    results = engine.generate(prompts, SamplingParams(max_tokens=MAX_TOKENS))
    assert sum(1 for first, _ in chunks if first > 0) >= len(prompts) - 1  # later chunks ran
    for ids, res in zip(prompts, results):
        assert res.token_ids == hf_greedy(ids, MAX_TOKENS)
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks


def test_preemption_keeps_outputs_exact(make_engine, prompts, hf_greedy):
    # Chat prompts are 37..70 tokens (+16 generated), 10..22 blocks of 4 tokens each. 30 blocks
    # admit two or three prompts, which then outgrow the cache while decoding: the newest
    # running sequence is preempted and recomputed later.
    engine = make_engine(num_blocks=30, block_size=4)
    results = engine.generate(prompts, SamplingParams(max_tokens=MAX_TOKENS, ignore_eos=True))
    assert engine.stats["preemptions"] > 0
    assert any(r.num_preemptions > 0 for r in results)
    for ids, res in zip(prompts, results):
        ref = hf_greedy(ids, MAX_TOKENS)
        assert res.token_ids[: len(ref)] == ref
        assert len(res.token_ids) == MAX_TOKENS and res.finish_reason == "length"
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks


def test_bfloat16_runs(make_engine, prompts):
    engine = make_engine(dtype="bfloat16")
    [res] = engine.generate([prompts[0]], SamplingParams(max_tokens=8))
    assert 1 <= res.completion_tokens <= 8 and res.text
