"""Scheduler policy without a model: budgets, FCFS admission, preemption of the newest."""

from __future__ import annotations

from parainfer.generation.kv_cache import BlockManager
from parainfer.generation.scheduler import Scheduler
from parainfer.generation.sequence import SequenceStatus

from gen_helpers import seq


def run_step(sched: Scheduler) -> None:
    """Pretend the model ran: every sequence that gets a token this step gains one."""
    batch = sched.schedule()
    for s in sched.advance(batch):
        s.output_token_ids.append(0)
    return batch


def test_admission_respects_token_budget_and_max_seqs():
    sched = Scheduler(BlockManager(100, 4), max_num_seqs=3, max_num_batched_tokens=10)
    for i, n in enumerate([4, 4, 4, 1]):
        sched.add(seq(n, f"s{i}"))
    batch = sched.schedule()
    assert [s.request_id for s in batch.prefill] == ["s0", "s1", "s2"]  # max_num_seqs = 3 stops s3
    assert all(s.status is SequenceStatus.RUNNING for s in batch.prefill)
    assert batch.chunks == [(0, 4), (0, 4), (0, 2)]  # s2 gets the 2 tokens left of the budget
    assert [s.request_id for s in batch.sampled] == ["s0", "s1"]  # s2 has 2 of its 4 tokens cached
    for s in sched.advance(batch):
        s.output_token_ids.append(0)
    batch = sched.schedule()
    assert [s.request_id for s in batch.decode] == ["s0", "s1"]
    assert [s.request_id for s in batch.prefill] == ["s2"] and batch.chunks == [(2, 4)]
    assert batch.num_tokens == 2 + 2 and [s.request_id for s in batch.sampled] == ["s0", "s1", "s2"]
    assert sched.waiting[0].request_id == "s3"


def test_long_prompt_is_prefilled_in_chunks_while_the_others_decode():
    sched = Scheduler(BlockManager(100, 4), max_num_seqs=4, max_num_batched_tokens=8)
    sched.add(seq(2, "short"))
    sched.add(seq(20, "long"))
    batch = run_step(sched)
    assert [s.request_id for s in batch.prefill] == ["short", "long"] and batch.chunks == [(0, 2), (0, 6)]
    steps = [run_step(sched) for _ in range(2)]
    # Each step: one decode for "short", 7 more prompt tokens of "long" (6 + 7 + 7 = 20).
    assert [[s.request_id for s in b.decode] for b in steps] == [["short"], ["short"]]
    assert [b.chunks for b in steps] == [[(6, 13)], [(13, 20)]]
    assert [s.request_id for s in steps[0].sampled] == ["short"]
    assert [s.request_id for s in steps[1].sampled] == ["short", "long"]  # its chunk reached the end
    long = steps[1].prefill[0]
    assert long.num_computed_tokens == 20 and long.num_tokens == 21 and not long.is_prefilling
    assert [s.request_id for s in run_step(sched).decode] == ["short", "long"]


def test_preempts_newest_and_requeues_it_first():
    bm = BlockManager(num_blocks=4, block_size=4)
    sched = Scheduler(bm, max_num_seqs=8, max_num_batched_tokens=100)
    old, new = seq(4, "old"), seq(4, "new")
    sched.add(old)
    sched.add(new)
    run_step(sched)  # both prefill: 1 block each, now 5 tokens each
    batch = run_step(sched)  # both need a 2nd block: 4 blocks used
    assert batch.preempted == [] and bm.num_free_blocks == 0
    for _ in range(3):
        run_step(sched)  # 9 tokens each after these: the next decode needs a 3rd block
    batch = sched.schedule()
    assert [s.request_id for s in batch.preempted] == ["new"]
    assert [s.request_id for s in batch.decode] == ["old"] and batch.prefill == []
    assert sched.waiting[0] is new and new.status is SequenceStatus.WAITING and new.block_table == []
    assert sched.num_preemptions == 1 and new.num_preemptions == 1


def test_finish_frees_blocks():
    bm = BlockManager(num_blocks=4, block_size=4)
    sched = Scheduler(bm, max_num_seqs=8, max_num_batched_tokens=100)
    s = seq(6)
    sched.add(s)
    run_step(sched)
    sched.finish(s, "length")
    assert s.is_finished and s.finish_reason == "length"
    assert bm.num_free_blocks == 4 and not sched.has_unfinished()
