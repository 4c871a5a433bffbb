"""Tasks of several batches, rows encoded by the workers, and the merger's encoded buffer."""

from __future__ import annotations

import io

from parainfer.executors.worker import encode_rows, run_task
from parainfer.io.sinks import JsonlSink
from parainfer.batch.merger import Merger
from parainfer.models.registry import build_predictor
from parainfer.records import Record, RecordError
from parainfer.batch.recovery import split_batches, split_task
from parainfer.executors.base import RowInfo, Task
from parainfer.batch.tasks import TaskBuilder, batch_sizes_split, group_tasks

COLUMNS = ("id", "text", False)


def _task(index: int, seqs: list[int], rows: bool = True) -> Task:
    texts = [f"t{s}" for s in seqs]
    info = RowInfo([f"r{s}" for s in seqs], [{"k": s} for s in seqs], [s + 1 for s in seqs], None, COLUMNS)
    return Task(index, seqs, texts, tokens=len(seqs), padded_tokens=len(seqs), batch_size=4,
                rows=info if rows else None)


def test_group_tasks_joins_consecutive_batches_and_renumbers() -> None:
    tasks = [_task(10 + i, [4 * i + j for j in range(4)]) for i in range(10)]
    grouped = group_tasks(tasks, 4, first_index=10)
    assert [t.index for t in grouped] == [10, 11, 12]
    assert [t.batches for t in grouped] == [[4, 4, 4, 4], [4, 4, 4, 4], [4, 4]]
    assert [s for t in grouped for s in t.seqs] == list(range(40))
    assert grouped[0].rows.ids == [f"r{s}" for s in range(16)] and grouped[0].rows.lines == list(range(1, 17))
    assert sum(t.tokens for t in grouped) == 40


def test_builder_groups_only_while_a_window_makes_enough_tasks() -> None:
    window = [Record(seq=i, id=i, text="x" * (1 + i % 9)) for i in range(64)]
    builder = TaskBuilder(lambda texts: [len(t) for t in texts], None, batch_size=4, row_columns=COLUMNS)
    builder.group, builder.min_tasks = 4, 8
    tasks = builder.build(window)  # 16 batches // 8 tasks at least: groups of 2
    assert len(tasks) == 8 and all(t.batches == [4, 4] for t in tasks)
    assert sorted(s for t in tasks for s in t.seqs) == list(range(64))
    assert builder.stats.tasks == 8 and builder.stats.batches == 16 and builder.stats.most_batches == 2


def test_a_dead_workers_group_goes_back_as_its_batches_and_a_half_keeps_its_batch_cuts() -> None:
    task = group_tasks([_task(0, [0, 1, 2]), _task(1, [3, 4, 5, 6, 7])], 2, first_index=0)[0]
    counter = iter(range(100, 200))
    parts = split_batches(task, lambda: next(counter))
    assert [(p.index, p.seqs, p.batches) for p in parts] == [(100, [0, 1, 2], None), (101, [3, 4, 5, 6, 7], None)]
    assert parts[1].rows.ids == ["r3", "r4", "r5", "r6", "r7"]
    first, second = split_task(task, 7, 8)  # halves at record 4: the second batch is cut
    assert first.batches == [3, 1] and second.batches is None and second.seqs == [4, 5, 6, 7]
    assert batch_sizes_split([3, 5], 4) == ([3, 1], [4]) and batch_sizes_split(None, 4) == (None, None)


def test_grouped_task_runs_each_batch_alone_and_quarantines_the_poison_record() -> None:
    predictor = build_predictor("classify", "parainfer.testing:raise_on_marker")
    predictor.load()
    a, b = _task(0, [0, 1, 2]), _task(1, [3, 4, 5])
    b.texts[1] = "poison @@crash@@"
    grouped = group_tasks([a, b], 2, first_index=0)[0]
    res = run_task(predictor, grouped, 0, 0.0)
    assert res.errors and res.errors[0][0] == 4 and "poison" in res.errors[0][1]  # position in the whole task
    assert [line is None for line in res.encoded] == [False, False, False, False, True, False]
    assert res.encoded[0] == b'{"id":"r0","text":"t0","k":0,"length":2}\n'


def test_worker_encoded_lines_equal_the_merger_and_sink_bytes_and_bad_rows_fail_alone() -> None:
    task = _task(0, [0, 1, 2])
    task.rows.extras[1] = {"length": 5, "z": "é"}  # renamed input_length
    outputs = [{"length": 2, "v": 1.5}, {"length": 3}, {"length": {1, 2}}]  # a set: JSON cannot hold it
    lines, unwritable, renamed = encode_rows(task, outputs)
    assert renamed == ["length"] and lines[2] is None
    assert unwritable[0][0] == 2 and unwritable[0][1] == "r2" and "output row cannot be written" in unwritable[0][2]
    merger = Merger()
    merger.expect([Record(seq=s, id=f"r{s}", text=f"t{s}", extra=task.rows.extras[s]) for s in range(2)])
    merger.complete([0, 1], outputs[:2])
    stream = io.BytesIO()
    sink = JsonlSink("x.jsonl", stream, "id", "text")
    sink.write_rows(merger.drain())
    assert stream.getvalue() == lines[0] + lines[1]


def test_encoded_merger_releases_lines_in_input_order_once() -> None:
    merger = Merger()
    merger.expect_encoded(6)
    assert merger.buffered == 6
    merger.complete_encoded([3, 1], [b"3\n", b"1\n"])
    merger.fail(RecordError(0, 1, None, "bad"))
    assert merger.drain_encoded() == (b"1\n", 1)  # 0 failed, 1 written, 2 missing
    merger.complete_encoded([2, 4, 5], [b"2\n", None, b"5\n"])
    merger.fail(RecordError(4, 5, None, "model"))
    assert merger.drain_encoded() == (b"2\n3\n5\n", 3) and merger.next_seq == 6 and merger.buffered == 0
    assert merger.drain_encoded() == (b"", 0) and merger.failed == 2
