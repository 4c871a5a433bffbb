"""Automatic prefix caching: block sharing by hash, the evictable pool, and exact outputs.

Model-free tests check the BlockManager; engine tests check that greedy tokens equal Hugging
Face's with caching on (and off), including preemption under KV pressure and chunked prefill
across a cached prefix, and that a request sharing a prefix skips its prefill.
"""

from __future__ import annotations

from parainfer.generation import SamplingParams
from parainfer.generation.kv_cache import BlockManager
from gen_helpers import seq

MAX_TOKENS = 16


def _with_tokens(ids: list[int], rid: str):
    s = seq(1, rid)
    s.prompt_token_ids = list(ids)
    return s


def test_second_sequence_takes_the_cached_prefix_blocks_by_reference():
    bm = BlockManager(num_blocks=10, block_size=4)
    a, b = _with_tokens(list(range(10)), "a"), _with_tokens(list(range(9)) + [99], "b")
    assert bm.allocate(a) == 0
    bm.cache_blocks(a, 10)  # blocks 0 and 1 are full; block 2 (2 tokens) is not cached
    assert bm.num_cached_blocks == 2
    assert bm.allocate(b) == 8  # same first 8 tokens: two blocks shared, the third is new
    assert b.block_table[:2] == a.block_table[:2] and b.block_table[2] != a.block_table[2]
    assert bm.num_free_blocks == 10 - 4
    bm.free(a)
    assert bm.num_free_blocks == 10 - 3  # the shared blocks are still held by b
    bm.free(b)
    assert bm.num_free_blocks == 10 and bm.num_cached_blocks == 2
    assert bm.stats["prefix_cache_queried_tokens"] == 20 and bm.stats["prefix_cache_hit_tokens"] == 8


def test_a_hit_leaves_at_least_the_last_token_to_compute():
    bm = BlockManager(num_blocks=4, block_size=4)
    a = _with_tokens(list(range(8)), "a")
    bm.allocate(a)
    bm.cache_blocks(a, 8)
    bm.free(a)
    again = _with_tokens(list(range(8)), "again")
    assert bm.allocate(again) == 4  # 8 tokens cached, but position 7 must run to give logits


def test_freed_cached_blocks_are_evicted_least_recent_first_when_memory_is_needed():
    bm = BlockManager(num_blocks=3, block_size=2)
    a = _with_tokens([1, 2, 3, 4, 5], "a")
    bm.allocate(a)
    bm.cache_blocks(a, 5)
    head, tail = a.block_table[0], a.block_table[1]
    bm.free(a)  # tail blocks go to the pool first: evicted before the shared head
    assert bm.num_free_blocks == 3 and bm.num_cached_blocks == 2
    b = _with_tokens([7, 8, 9, 10], "b")  # no hit: needs 2 blocks, the free one and one eviction
    assert bm.allocate(b) == 0
    assert tail in b.block_table and head not in b.block_table
    assert bm.stats["prefix_cache_evictions"] == 1 and bm.num_cached_blocks == 1
    c = _with_tokens([1, 2, 0], "c")
    assert bm.can_allocate(c) is False  # the head hits, but no block is left for the rest
    bm.free(b)
    assert bm.allocate(c) == 2 and c.block_table[0] == head


def test_disabled_prefix_caching_shares_nothing():
    bm = BlockManager(num_blocks=6, block_size=2, enable_prefix_caching=False)
    a, b = _with_tokens([1, 2, 3, 4, 5], "a"), _with_tokens([1, 2, 3, 4, 5], "b")
    bm.allocate(a)
    bm.cache_blocks(a, 5)
    assert bm.allocate(b) == 0 and set(a.block_table).isdisjoint(b.block_table)
    bm.free(a)
    bm.free(b)
    assert bm.num_free_blocks == 6 and bm.num_cached_blocks == 0


def test_greedy_outputs_identical_with_caching_on_and_off(make_engine, prompts, hf_greedy):
    # The four chat prompts share the chat template's system prompt (24 tokens: one full
    # 16-token block); the second prompt shares it with the first in the same step.
    outs = {}
    for on in (True, False):
        engine = make_engine(enable_prefix_caching=on)
        first = engine.generate(prompts[:2], SamplingParams(max_tokens=MAX_TOKENS))
        rest = engine.generate(prompts[2:], SamplingParams(max_tokens=MAX_TOKENS))
        outs[on] = [r.token_ids for r in first + rest]
        hits = engine.stats["prefix_cache_hit_tokens"]
        assert (hits == 16 * 3) if on else hits == 0
        assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks
    assert outs[True] == outs[False]
    assert outs[True] == [hf_greedy(ids, MAX_TOKENS) for ids in prompts]


def test_second_request_with_the_same_prefix_skips_its_prefill(make_engine, prompts):
    engine = make_engine(block_size=4)
    engine.generate([prompts[0]], SamplingParams(max_tokens=4))
    computed, hits = engine.stats["prefill_tokens"], engine.stats["prefix_cache_hit_tokens"]
    assert hits == 0 and computed == len(prompts[0])
    [res] = engine.generate([prompts[1]], SamplingParams(max_tokens=4))
    common = next(i for i, (x, y) in enumerate(zip(prompts[0], prompts[1])) if x != y)
    skipped = engine.stats["prefix_cache_hit_tokens"]
    assert skipped == common // 4 * 4 and skipped >= 24
    assert engine.stats["prefill_tokens"] - computed == len(prompts[1]) - skipped
    [again] = engine.generate([prompts[1]], SamplingParams(max_tokens=4))  # the whole prompt is cached now
    assert again.token_ids == res.token_ids
    assert engine.stats["prefix_cache_hit_tokens"] - skipped == (len(prompts[1]) - 1) // 4 * 4
    metrics = _scrape(engine.stats)  # what /metrics shows
    assert metrics['parainfer_prefill_tokens_total{kind="cached"}'] == engine.stats["prefix_cache_hit_tokens"]
    assert metrics['parainfer_prefill_tokens_total{kind="computed"}'] == engine.stats["prefill_tokens"]
    queried = len(prompts[0]) + 2 * len(prompts[1])
    assert metrics["parainfer_prefix_cache_queries_total"] == queried
    assert metrics["parainfer_prefix_cache_hit_rate"] == engine.stats["prefix_cache_hit_tokens"] / queried


def _scrape(stats: dict) -> dict[str, float]:
    from parainfer.serving.metrics import EngineStatsCollector, ServingMetrics

    metrics = ServingMetrics()
    metrics.registry.register(EngineStatsCollector(lambda: stats))
    lines = metrics.render().decode().splitlines()
    return {k: float(v) for k, v in (line.rsplit(" ", 1) for line in lines if line.startswith("parainfer_p"))}


def test_preemption_under_kv_pressure_with_caching_is_exact(make_engine, prompts, hf_greedy):
    # 30 blocks of 4 tokens: sequences outgrow the cache and are preempted; their blocks stay
    # cached (evictable), so a recompute takes back what survived, and others evict them.
    engine = make_engine(num_blocks=30, block_size=4)
    results = engine.generate(prompts, SamplingParams(max_tokens=MAX_TOKENS, ignore_eos=True))
    assert engine.stats["preemptions"] > 0 and engine.stats["prefix_cache_evictions"] > 0
    assert engine.stats["prefix_cache_hit_tokens"] > 0
    for ids, res in zip(prompts, results):
        ref = hf_greedy(ids, MAX_TOKENS)
        assert res.token_ids[: len(ref)] == ref and len(res.token_ids) == MAX_TOKENS
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks


def test_chunked_prefill_across_a_cached_prefix_is_exact(make_engine, prompts, hf_greedy, record_chunks):
    # A 12-token budget: the second wave's prompts start after their cached prefix and are
    # still cut into several chunks, each attending to the cached blocks before it.
    engine = make_engine(max_num_batched_tokens=12, block_size=4)
    chunks = record_chunks(engine)
    first = engine.generate(prompts[:1], SamplingParams(max_tokens=MAX_TOKENS))
    chunks.clear()
    rest = engine.generate(prompts[1:4], SamplingParams(max_tokens=MAX_TOKENS))
    assert engine.stats["prefix_cache_hit_tokens"] >= 3 * 24
    assert sum(1 for start, _ in chunks if start >= 24) >= 6  # several chunks after the cached prefix
    for ids, res in zip(prompts[:4], first + rest):
        assert res.token_ids == hf_greedy(ids, MAX_TOKENS)
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks
