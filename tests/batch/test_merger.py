"""Merger: input order restored, each record released exactly once, failures skipped."""

from __future__ import annotations

import random

import numpy as np

from parainfer.batch.merger import Merger
from parainfer.records import Record, RecordError


def test_out_of_order_results_come_out_in_input_order() -> None:
    merger = Merger()
    recs = [Record(seq=i, id=f"r{i}", text=f"t{i}", extra={"x": i}) for i in range(100)]
    merger.expect(recs)
    chunks = [list(range(i, i + 10)) for i in range(0, 100, 10)]
    random.Random(0).shuffle(chunks)
    rows = []
    for chunk in chunks:
        merger.complete(chunk, [{"y": s * 2} for s in chunk])
        rows += merger.drain()
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(100)]
    assert rows[7] == {"id": "r7", "text": "t7", "x": 7, "y": 14}
    assert merger.buffered == 0 and merger.written == 100


def test_nothing_is_released_before_the_frontier() -> None:
    merger = Merger()
    merger.expect([Record(seq=i, id=i, text="t") for i in range(3)])
    merger.complete([1, 2], [{"v": 1}, {"v": 2}])
    assert merger.drain() == []
    merger.complete([0], [{"v": 0}])
    assert [r["v"] for r in merger.drain()] == [0, 1, 2]
    assert merger.drain() == []


def test_failed_records_are_skipped_and_counted() -> None:
    merger = Merger()
    merger.expect([Record(seq=0, id="a", text="t"), Record(seq=2, id="c", text="t")])
    merger.fail(RecordError(seq=1, line=2, id=None, reason="not JSON"))
    merger.complete([0, 2], [{"v": 0}, {"v": 2}])
    assert [r["id"] for r in merger.drain()] == ["a", "c"]
    assert merger.failed == 1


def test_numpy_outputs_pass_through_to_the_sink() -> None:
    merger = Merger()
    merger.expect([Record(seq=0, id=0, text="t")])
    vector = np.arange(3, dtype=np.float32)
    merger.complete([0], [{"embedding": vector, "score": np.float32(0.5)}])
    (row,) = merger.drain()
    assert row["embedding"] is vector and row["score"] == 0.5


def test_input_columns_named_like_results_are_kept_as_input_prefixed() -> None:
    merger = Merger()
    merger.expect([Record(seq=0, id=0, text="t", extra={"label": "gold", "src": "a"})])
    merger.complete([0], [{"label": "predicted", "score": 0.9}])
    (row,) = merger.drain()
    assert row == {"id": 0, "text": "t", "input_label": "gold", "src": "a", "label": "predicted", "score": 0.9}


def test_the_text_and_id_columns_named_like_results_are_kept_too() -> None:
    merger = Merger(id_column="id", text_column="translation")  # translating back the column a job wrote
    merger.expect([Record(seq=0, id="a1", text="Olá mundo", extra={"text": "Hello world"})])
    merger.complete([0], [{"translation": "Hello world"}])
    (row,) = merger.drain()
    assert row == {"id": "a1", "input_translation": "Olá mundo", "text": "Hello world", "translation": "Hello world"}
    assert merger.renamed == {"translation"}
    ids = Merger(id_column="length", text_column="text")  # a result column named like the id column
    ids.expect([Record(seq=0, id=7, text="abc", extra={})])
    ids.complete([0], [{"length": 3}])
    assert ids.drain() == [{"input_length": 7, "text": "abc", "length": 3}] and ids.renamed == {"length"}
