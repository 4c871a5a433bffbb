"""Deterministic mode of the engine: a greedy request's tokens do not depend on the running batch.

The same 64 real prompts (VADER tweets and reviews) run with room for 1, 8 and 32 sequences at a
time: every prompt gets the same tokens. The scheduler's fixed prefill chunks are checked without
a model: a chunk ends at a multiple of the chunk length whatever the decode rows beside it.
"""

from __future__ import annotations

import json

from parainfer.generation import SamplingParams
from parainfer.generation.kv_cache import BlockManager
from parainfer.generation.scheduler import Scheduler
from parainfer.platform import datasets

from gen_helpers import seq


def test_greedy_tokens_are_the_same_at_batch_1_8_and_32(make_engine):
    prompts = [json.loads(line)["text"] for line in datasets.fetch("vader").open()][:64]
    tokens = {}
    for batch in (1, 8, 32):
        engine = make_engine(max_num_seqs=batch, deterministic=True)
        assert engine.batch_invariance["deterministic"] is True, engine.batch_invariance
        assert engine.config.enable_prefix_caching is False
        results = engine.generate(prompts, SamplingParams(max_tokens=2, temperature=0.0))
        tokens[batch] = [r.token_ids for r in results]
    assert all(len(t) >= 1 for t in tokens[1])
    assert tokens[8] == tokens[1] and tokens[32] == tokens[1]


def test_fixed_chunks_end_at_multiples_of_the_chunk_whatever_runs_beside_them():
    sched = Scheduler(BlockManager(200, 4, enable_prefix_caching=False), max_num_seqs=4,
                      max_num_batched_tokens=10, fixed_chunk=8)
    sched.add(seq(3, "short"))
    sched.add(seq(20, "long"))
    chunks = []
    while any(s.is_prefilling for s in sched.running) or sched.waiting:
        batch = sched.schedule()
        chunks += [(s.request_id, c) for s, c in zip(batch.prefill, batch.chunks)]
        for s in sched.advance(batch):
            s.output_token_ids.append(0)
    # "short" decodes beside "long" from the second step on: the budget left is 9, yet "long" is
    # cut at 8 and 16, as it would be alone.
    assert chunks == [("short", (0, 3)), ("long", (0, 8)), ("long", (8, 16)), ("long", (16, 20))]
