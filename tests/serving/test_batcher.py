"""The dynamic batcher on its own: batch forming, length grouping, order, backpressure, cancel."""

from __future__ import annotations

import asyncio

import pytest

from parainfer.serving.embed.batcher import DynamicBatcher, Item, QueueFull, take_batches


def items(lengths: list[int]) -> list[Item]:
    loop = asyncio.new_event_loop()
    out = [Item(f"t{i}", n, loop.create_future(), t_enqueued=float(i), key=i) for i, n in enumerate(lengths)]
    loop.close()
    return out


def texts(batch: list[Item]) -> list[str]:
    return [it.text for it in batch]


def test_take_batches_groups_by_length_and_serves_the_oldest_first():
    # The docstring's worked example: lengths by arrival a:9 b:2 c:8 d:3, batches of 2, one slot.
    waiting = items([9, 2, 8, 3])
    assert [texts(b) for b in take_batches(waiting, 2, slots=1, window=8)] == [["t2", "t0"]]
    assert [texts(b) for b in take_batches(waiting, 2, slots=2, window=8)] == [["t2", "t0"], ["t1", "t3"]]


def test_take_batches_without_grouping_keeps_arrival_order():
    waiting = items([9, 2, 8, 3, 1])
    assert [texts(b) for b in take_batches(waiting, 2, slots=5, window=8, group_by_length=False)] == [
        ["t0", "t1"], ["t2", "t3"], ["t4"]]


def test_take_batches_sorts_only_the_window_of_oldest_items():
    waiting = items([50, 40, 30, 1, 1, 1])
    batches = take_batches(waiting, 2, slots=3, window=2)
    assert [texts(b) for b in batches] == [["t1", "t0"]]  # the newer short ones do not jump ahead


def test_take_batches_cuts_padding():
    """Grouping: padded tokens (B x longest) fall toward the real tokens."""
    lengths = [5, 200, 7, 180, 6, 190, 8, 170]
    def padded(batches: list[list[Item]]) -> int:
        return sum(len(b) * max(it.tokens for it in b) for b in batches)
    mixed = take_batches(items(lengths), 4, slots=9, window=8, group_by_length=False)
    grouped = take_batches(items(lengths), 4, slots=9, window=8)
    assert padded(grouped) < 0.6 * padded(mixed)


def test_idle_replicas_share_the_waiting_inputs():
    """4 inputs and 2 idle replicas: 2 batches of 2 (by length), not one of 4 and an idle replica;
    never more batches than idle replicas or free slots, and one input cannot be split."""
    waiting = items([9, 2, 8, 3])
    assert [texts(b) for b in take_batches(waiting, 32, slots=2, window=64)] == [["t1", "t3", "t2", "t0"]]
    assert [texts(b) for b in take_batches(waiting, 32, slots=2, window=64, spread=2)] == [["t1", "t3"], ["t2", "t0"]]
    assert len(take_batches(waiting, 32, slots=1, window=64, spread=2)) == 1  # one free slot: one batch
    assert sorted(len(b) for b in take_batches(items([5] * 7), 32, slots=3, window=64, spread=3)) == [2, 2, 3]
    assert len(take_batches(items([5]), 32, slots=3, window=64, spread=3)) == 1


def test_token_budget_sends_long_inputs_alone_and_packs_short_ones():
    # budget 400 padded tokens: the 300-token input alone, the 150s two to a batch, 40 short ones
    # (10 tokens) in batches of 32 (max_batch_size), then what remains.
    waiting = items([300, 150, 150, 150] + [10] * 40)
    batches = take_batches(waiting, 32, slots=9, window=64, max_batch_tokens=400)
    sizes = sorted((max(it.tokens for it in b), len(b)) for b in batches)
    assert sizes == [(10, 8), (10, 32), (150, 1), (150, 2), (300, 1)]
    assert all(len(b) * max(it.tokens for it in b) <= 400 or len(b) == 1 for b in batches)
    assert sorted(it.key for b in batches for it in b) == list(range(44))  # every input once


def test_an_input_over_the_budget_gets_a_batch_of_its_own():
    batches = take_batches(items([5, 900, 6]), 8, slots=3, window=8, max_batch_tokens=100)
    assert sorted(texts(b) for b in batches) == [["t0", "t2"], ["t1"]]


def test_a_token_budget_worth_of_waiting_inputs_is_a_full_batch():
    """The batcher does not wait max_wait for more inputs once the waiting ones fill the budget."""
    async def main() -> None:
        reps = FakeReplicas(slots=1)
        batcher = make(reps, max_batch_size=64, max_wait_s=5.0, max_batch_tokens=200)
        short = [batcher.submit([f"s{i}"], [1])[0] for i in range(20)]  # a rate that makes waiting pay
        loop = asyncio.create_task(batcher.run())
        await asyncio.sleep(0.05)
        assert reps.batches == []  # 20 tokens of 200: it waits for more (up to 5 s)
        long = batcher.submit(["l0", "l1"], [100, 100])
        await asyncio.wait_for(asyncio.gather(*(it.future for it in short + long)), 2)
        loop.cancel()
        assert reps.batches == [[f"s{i}" for i in range(20)], ["l0", "l1"]]
    asyncio.run(main())


class FakeReplicas:
    """Records batches; resolves each item with its text's length after ``delay_s``."""

    def __init__(self, slots: int = 1, delay_s: float = 0.01):
        self.slots, self.delay_s, self.busy = slots, delay_s, 0
        self.batches: list[list[str]] = []
        self.batcher: DynamicBatcher | None = None

    def free(self) -> int:
        return self.slots - self.busy

    def dispatch(self, batch: list[Item]) -> None:
        self.batches.append(texts(batch))
        self.busy += 1
        asyncio.get_running_loop().call_later(self.delay_s, self._finish, batch)

    def _finish(self, batch: list[Item]) -> None:
        self.busy -= 1
        for it in batch:
            if not it.future.done():
                it.future.set_result({"text": it.text})
        assert self.batcher is not None
        self.batcher.wake()


def make(replicas: FakeReplicas, **kw: object) -> DynamicBatcher:
    batcher = DynamicBatcher(replicas.dispatch, replicas.free, **kw)
    replicas.batcher = batcher
    return batcher


async def request(batcher: DynamicBatcher, words: list[str]) -> list[str]:
    queued = batcher.submit(words, [len(w) for w in words])
    return [out["text"] for out in await asyncio.gather(*(it.future for it in queued))]


def test_concurrent_requests_share_batches_and_get_their_own_outputs_in_order():
    async def main() -> None:
        reps = FakeReplicas(slots=1, delay_s=0.02)
        batcher = make(reps, max_batch_size=8, max_wait_s=0.05)
        loop = asyncio.create_task(batcher.run())
        reqs = [[f"r{r}-{i}" + "x" * ((r * 7 + i * 3) % 11) for i in range(3)] for r in range(10)]
        answers = await asyncio.gather(*(request(batcher, words) for words in reqs))
        loop.cancel()
        assert answers == reqs  # each request gets exactly its outputs, in its input order
        assert max(len(b) for b in reps.batches) == 8  # 30 inputs went in full batches...
        assert len(reps.batches) == 4  # ... of 8, 8, 8, 6: requests span batches
    asyncio.run(main())


def test_a_lone_input_waits_at_most_max_wait():
    async def main() -> None:
        reps = FakeReplicas()
        batcher = make(reps, max_batch_size=32, max_wait_s=0.02)
        loop = asyncio.create_task(batcher.run())
        t0 = asyncio.get_running_loop().time()
        assert await request(batcher, ["alone"]) == ["alone"]
        assert asyncio.get_running_loop().time() - t0 < 0.5
        loop.cancel()
    asyncio.run(main())


class DispatchClock(FakeReplicas):
    """FakeReplicas that also notes when each batch was dispatched (loop time)."""

    def __init__(self, **kw: object):
        super().__init__(**kw)
        self.times: list[float] = []

    def dispatch(self, batch: list[Item]) -> None:
        self.times.append(asyncio.get_running_loop().time())
        super().dispatch(batch)


def test_under_a_trickle_an_idle_replica_takes_a_lone_input_at_once():
    """No input arrived in the last second besides this one (1 input/s x 0.5 s = 0.5 expected
    within max_wait): waiting could not fill the batch, so it is dispatched without waiting."""
    async def main() -> None:
        reps = DispatchClock(delay_s=0.001)
        batcher = make(reps, max_batch_size=32, max_wait_s=0.5)
        loop = asyncio.create_task(batcher.run())
        t0 = asyncio.get_running_loop().time()
        assert await request(batcher, ["alone"]) == ["alone"]
        loop.cancel()
        assert reps.times[0] - t0 < 0.3
    asyncio.run(main())


def test_under_load_an_idle_replica_waits_for_the_batch_to_fill():
    """40 inputs arrived in the last second (40/s x 0.5 s = 20 expected within max_wait): a lone
    input waits up to max_wait for company, and the inputs that come meanwhile share its batch."""
    async def main() -> None:
        reps = DispatchClock(delay_s=0.001)
        batcher = make(reps, max_batch_size=32, max_wait_s=0.5)
        loop = asyncio.create_task(batcher.run())
        await asyncio.gather(*(request(batcher, [f"warm{i}"]) for i in range(40)))
        t0 = asyncio.get_running_loop().time()
        lone = asyncio.create_task(request(batcher, ["first"]))
        await asyncio.sleep(0.05)
        assert await asyncio.gather(lone, request(batcher, ["second"])) == [["first"], ["second"]]
        loop.cancel()
        assert sorted(reps.batches[-1]) == ["first", "second"]
        assert reps.times[-1] - t0 >= 0.45
    asyncio.run(main())


def test_no_batch_is_formed_while_every_replica_is_busy():
    async def main() -> None:
        reps = FakeReplicas(slots=1, delay_s=0.1)
        batcher = make(reps, max_batch_size=64, max_wait_s=0.0)
        loop = asyncio.create_task(batcher.run())
        first = asyncio.create_task(request(batcher, ["a"]))
        await asyncio.sleep(0.02)  # "a" is running; the next 20 inputs wait for the replica
        rest = [asyncio.create_task(request(batcher, [f"b{i}"])) for i in range(20)]
        await asyncio.gather(first, *rest)
        loop.cancel()
        assert [len(b) for b in reps.batches] == [1, 20]
    asyncio.run(main())


def test_queue_full_raises_and_queues_nothing():
    async def main() -> None:
        batcher = DynamicBatcher(lambda b: None, lambda: 0, max_queue=5)
        batcher.submit(["a", "b", "c"], [1, 1, 1])
        with pytest.raises(QueueFull) as err:
            batcher.submit(["d", "e", "f"], [1, 1, 1])
        assert err.value.retry_after_s >= 1
        assert batcher.depth == 3
    asyncio.run(main())


def test_cancel_drops_queued_inputs():
    async def main() -> None:
        batcher = DynamicBatcher(lambda b: None, lambda: 0, max_queue=10)
        keep = batcher.submit(["a", "b"], [1, 1])
        drop = batcher.submit(["c", "d", "e"], [1, 1, 1])
        assert batcher.cancel(drop) == 3
        assert batcher.depth == 2 and all(it.future.cancelled() for it in drop)
        assert not any(it.future.done() for it in keep)
    asyncio.run(main())


# -- properties of take_batches over random queues (hypothesis) ------------------------------
from hypothesis import given, settings, strategies as st  # noqa: E402

from parainfer.serving.embed.batcher import length_group  # noqa: E402

queues = st.lists(st.tuples(st.integers(1, 600), st.floats(0, 0.2)), min_size=1, max_size=80)


def queued(spec: list[tuple[int, float]]) -> list[Item]:
    """Items in arrival order from (tokens, gap since the previous arrival in s)."""
    loop = asyncio.new_event_loop()
    out, t = [], 0.0
    for i, (tokens, gap) in enumerate(spec):
        t += gap
        out.append(Item(f"t{i}", tokens, loop.create_future(), t_enqueued=t, key=i))
    loop.close()
    return out


@settings(max_examples=150, deadline=None)
@given(spec=queues, size=st.integers(1, 40), slots=st.integers(1, 4), spread=st.integers(1, 4),
       budget=st.one_of(st.none(), st.integers(64, 8192)), window=st.integers(1, 100),
       age=st.one_of(st.none(), st.floats(0, 1)), late=st.floats(0, 2))
def test_take_batches_keeps_arrival_order_in_a_length_group_and_serves_the_oldest(
        spec, size, slots, spread, budget, window, age, late):
    waiting = queued(spec)
    now = waiting[-1].t_enqueued + late
    window = max(window, size)
    batches = take_batches(waiting, size, slots, window, True, budget, spread, now, age)
    where = {it.key: b for b, batch in enumerate(batches) for it in batch}
    assert 1 <= len(batches) <= slots
    assert len(where) == sum(map(len, batches))  # no item twice
    assert where.get(0) == 0 or (spread > 1 and 0 in where)  # the oldest input: first batch (or its halves)
    for batch in batches:
        assert len(batch) <= size
        assert budget is None or len(batch) == 1 or len(batch) * max(it.tokens for it in batch) <= budget
    # within a length group an input goes only with or after every older one: a group's dispatched
    # inputs are its oldest, and their batches are in arrival order
    groups: dict[int, list[Item]] = {}
    for item in waiting:
        groups.setdefault(length_group(item.tokens), []).append(item)
    for members in groups.values():
        sent = [where[it.key] for it in members if it.key in where]
        assert [it.key in where for it in members] == [True] * len(sent) + [False] * (len(members) - len(sent))
        assert sent == sorted(sent), members
    # the age limit: the overdue inputs (in the window), in arrival order, go in this dispatch
    # (the first batch, unless it was split over idle replicas) while they fit one batch
    if age is not None and now - waiting[0].t_enqueued >= age:
        longest = 0
        for n, item in enumerate(it for it in waiting[:window] if now - it.t_enqueued >= age):
            longest = max(longest, item.tokens)
            if n + 1 > size or (budget is not None and n > 0 and (n + 1) * longest > budget):
                break
            assert where.get(item.key) == 0 or (spread > 1 and item.key in where), (item, batches)
