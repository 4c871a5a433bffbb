"""TaskBuilder: batch size and token budget, length bucketing, truncation counts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from parainfer.records import Record
from parainfer.batch.tasks import TaskBuilder
from parainfer.counts import split_by_padding


def words(n: int) -> str:
    return " ".join(["w"] * n)


def word_count(texts: list[str]) -> list[int]:
    return [len(t.split()) for t in texts]


def records(lengths: list[int]) -> list[Record]:
    return [Record(seq=i, id=i, text=words(n)) for i, n in enumerate(lengths)]


def test_batch_size_caps_records_per_task() -> None:
    tasks = TaskBuilder(word_count, None, batch_size=3, max_batch_tokens=None, bucket=False).build(records([1] * 10))
    assert [len(t) for t in tasks] == [3, 3, 3, 1]
    assert [t.index for t in tasks] == [0, 1, 2, 3]


def test_token_budget_limits_padded_size() -> None:
    lengths = [10, 10, 10, 50, 50, 5]
    builder = TaskBuilder(word_count, None, batch_size=100, max_batch_tokens=100, bucket=False)
    for task in builder.build(records(lengths)):
        assert task.padded_tokens <= 100 or len(task) == 1


def test_single_record_over_budget_gets_its_own_task() -> None:
    tasks = TaskBuilder(word_count, None, batch_size=8, max_batch_tokens=10, bucket=False).build(records([3, 40, 3]))
    assert [len(t) for t in tasks] == [1, 1, 1]
    assert tasks[1].padded_tokens == 40


def test_bucketing_sorts_by_length_and_cuts_padding() -> None:
    lengths = [1, 30, 2, 29, 3, 28, 4, 27]
    plain = TaskBuilder(word_count, None, batch_size=2, bucket=False)
    bucketed = TaskBuilder(word_count, None, batch_size=2, bucket=True)
    plain.build(records(lengths))
    tasks = bucketed.build(records(lengths))
    assert bucketed.stats.padding_efficiency > plain.stats.padding_efficiency
    by_index = sorted(tasks, key=lambda t: t.index)
    assert [t.seqs for t in by_index] == [[0, 2], [4, 6], [7, 5], [3, 1]]


def test_truncation_is_counted_and_capped() -> None:
    builder = TaskBuilder(word_count, 5, batch_size=10, bucket=False)
    (task,) = builder.build(records([2, 9, 5, 6]))
    assert builder.stats.truncated_records == 2
    assert task.tokens == 2 + 5 + 5 + 5
    assert task.padded_tokens == 4 * 5


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 60), min_size=1, max_size=80), st.integers(1, 16), st.integers(1, 300),
       st.booleans())
def test_every_record_in_exactly_one_task(lengths: list[int], batch: int, budget: int, bucket: bool) -> None:
    builder = TaskBuilder(word_count, None, batch_size=batch, max_batch_tokens=budget, bucket=bucket)
    tasks = builder.build(records(lengths))
    seqs = [s for t in tasks for s in t.seqs]
    assert sorted(seqs) == list(range(len(lengths)))
    for t in tasks:
        assert 1 <= len(t) <= batch
        assert len(t) == 1 or t.padded_tokens <= budget
        assert t.texts == [words(lengths[s]) for s in t.seqs]


def _partitions(n: int):
    """Every way to cut range(n) into consecutive non-empty runs (as lists of cut points)."""
    for mask in range(1 << max(0, n - 1)):
        cuts = [i + 1 for i in range(n - 1) if mask >> i & 1]
        yield [range(a, b) for a, b in zip([0, *cuts], [*cuts, n])]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 300), min_size=1, max_size=9), st.floats(0, 500))
def test_split_by_padding_is_optimal_and_covers_the_batch(lengths: list[int], overhead: float) -> None:
    lengths = sorted(lengths)

    def cost(runs) -> float:
        return sum(overhead + len(r) * lengths[r[-1]] for r in runs)

    runs = split_by_padding(lengths, overhead)
    assert [i for r in runs for i in r] == list(range(len(lengths)))
    assert cost(runs) <= min(cost(p) for p in _partitions(len(lengths))) + 1e-6


def test_split_by_padding_cuts_a_mixed_batch_and_leaves_a_uniform_one() -> None:
    assert split_by_padding([5] * 10 + [200] * 10, 48) == [range(0, 10), range(10, 20)]
    assert split_by_padding([30, 31, 32, 33], 48) == [range(0, 4)]  # 6 padded tokens < one call
    assert split_by_padding([5] * 10 + [200] * 10, float("inf")) == [range(0, 20)]
    assert split_by_padding([], 48) == []
    with pytest.raises(ValueError, match="ascending"):
        split_by_padding([3, 2], 1)
