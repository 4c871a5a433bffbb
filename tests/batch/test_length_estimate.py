"""The driver's length estimate (characters x a learned ratio) and the workers' exact counts."""

from __future__ import annotations

import pytest

from parainfer.batch.length_estimate import LengthEstimator
from parainfer.counts import text_chars
from parainfer.counts import within_budget
from parainfer.records import Record
from parainfer.batch.tasks import TaskBuilder
from parainfer.counts import TokenCounts


def test_estimate_uses_the_prior_and_learns_the_ratio_from_exact_counts() -> None:
    est = LengthEstimator()
    assert est(["x" * 40]) == [11]  # 1 + 40 / 4
    # Workers counted 300 tokens over 600 characters of records they did not truncate.
    est.observe(TokenCounts(real=400, padded=500, truncated=1, fit_records=3, fit_chars=600, fit_tokens=300))
    assert est.tokens_per_char == pytest.approx(0.5)
    assert est(["x" * 40, ""]) == [11, 1]  # batches do not depend on when results came back
    assert est.describe()["learned_from_records"] == 3


def test_estimate_counts_no_more_than_the_character_budget() -> None:
    est = LengthEstimator(max_chars=100)
    assert est(["y" * 10_000]) == est(["y" * 100])


def test_text_chars_of_strings_and_conversations() -> None:
    assert text_chars("héllo") == 5
    assert text_chars([{"role": "user", "content": "abc"}, {"role": "assistant", "content": None}]) == 3
    assert text_chars([{"role": "user", "content": [{"type": "text", "text": "abcd"}]}]) == 4  # content parts


def test_text_chars_of_openai_batch_request_lines() -> None:
    """A batch line is sized by what its body gives the model, as a record of that text would
    be (every line was one token before: no length bucketing, padding efficiency 0.25)."""
    line = {"custom_id": "a", "method": "POST", "url": "/v1/embeddings"}
    assert text_chars({**line, "body": {"model": "text-embedding-3-small", "input": "hello world"}}) == 11
    assert text_chars({**line, "body": {"input": ["hello", "good morning"]}}) == 17
    assert text_chars({**line, "body": {"messages": [{"role": "user", "content": "Name a fruit."}]}}) == 13
    assert text_chars({**line, "body": {"prompt": [1, 2, 3]}}) == 12  # token ids: 4 characters each
    assert text_chars({**line, "body": "not an object"}) == 0


def test_counts_from_lengths_learn_only_from_untruncated_records() -> None:
    counts = TokenCounts.from_lengths(["aa", "bbbb", "c" * 99], [3, 5, 8], [False, False, True])
    assert (counts.real, counts.padded, counts.truncated) == (16, 24, 1)
    assert (counts.fit_records, counts.fit_chars, counts.fit_tokens) == (2, 6, 8)


def test_builder_cuts_long_texts_to_the_character_budget() -> None:
    window = [Record(seq=i, id=i, text=t) for i, t in enumerate(["short", "z" * 5_000_000, "mid " * 10])]
    builder = TaskBuilder(LengthEstimator(max_chars=64), None, batch_size=8, max_chars=64)
    (task,) = builder.build(window)
    assert sorted(len(t) for t in task.texts) == [5, 40, 64]
    assert window[1].text == "z" * 5_000_000  # the record itself (for the output row) is whole


def test_within_budget_cuts_forward_passes_to_the_token_budget() -> None:
    lengths = [2, 3, 3, 4, 10, 10, 40]
    runs = within_budget([range(0, 4), range(4, 7)], lengths, max_tokens=20)
    assert [list(r) for r in runs] == [[0, 1, 2, 3], [4, 5], [6]]
    assert all(len(r) == 1 or len(r) * lengths[r.stop - 1] <= 20 for r in runs)
    assert within_budget([range(0, 7)], lengths, None) == [range(0, 7)]


def test_token_counts_add_sums_every_field():
    a = TokenCounts.from_lengths(["ab", "abcd"], [1, 3], [False, True])
    b = TokenCounts.from_lengths(["abcdef"], [2], [False])
    a.add(b)
    assert (a.real, a.padded, a.truncated) == (6, 8, 1)
    assert (a.fit_records, a.fit_chars, a.fit_tokens) == (2, 8, 3)
