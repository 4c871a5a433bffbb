"""In-process units of fault recovery: bisection plans, the watchdog, ordered errors, the
errors-file resume, Parquet parts assembled byte-identically, the atomic manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from parainfer.executors.base import WorkerFailed
from parainfer.io.checkpoint import OrderedErrors, read_manifest, write_manifest
from parainfer.io.parquet_parts import PartedParquetSink
from parainfer.io.sinks import ErrorSink
from parainfer.records import RecordError
from parainfer.batch.recovery import TaskRecovery, Watchdog, split_task
from parainfer.executors.base import Task


def task(index: int, n: int, attempt: int = 0) -> Task:
    return Task(index=index, seqs=list(range(10 * index, 10 * index + n)), texts=[f"t{i}" for i in range(n)],
                tokens=4 * n, padded_tokens=5 * n, attempt=attempt)


def test_split_task_keeps_order_and_shares_tokens() -> None:
    a, b = split_task(task(3, 5), 10, 11)
    assert (a.index, a.seqs, b.index, b.seqs) == (10, [30, 31], 11, [32, 33, 34])
    assert a.texts + b.texts == task(3, 5).texts and a.tokens + b.tokens == 20 and a.attempt == b.attempt == 0
    with pytest.raises(ValueError, match="cannot split"):
        split_task(task(1, 1), 2, 3)


def test_suspect_is_bisected_and_queued_tasks_requeued_without_an_attempt() -> None:
    running, queued = task(1, 8), task(2, 8)
    live = {1: running, 2: queued}
    fresh = iter(range(100, 200))
    plan = TaskRecovery(max_retries=2, new_index=fresh.__next__).plan(
        WorkerFailed(0, "worker 0 exited with code -9", [running, queued], running=1), live)
    assert [t.index for t in plan.requeue] == [100, 101, 2] and queued.attempt == 0
    assert sorted(live) == [2, 100, 101] and plan.bisected == 1 and plan.retries == 1 and not plan.failed


def test_single_record_suspect_is_retried_then_failed_naming_the_death() -> None:
    recovery = TaskRecovery(max_retries=1, new_index=iter(range(9)).__next__)
    one = task(4, 1)
    live = {4: one}
    event = WorkerFailed(0, "worker 0 (pid 7) exited with code -9", [one], running=4)
    assert recovery.plan(event, live).requeue == [one] and one.attempt == 1
    plan = recovery.plan(event, live)
    assert plan.requeue == [] and live == {}
    ((failed, reason),) = plan.failed
    assert failed is one and "worker died 2 time(s)" in reason and "exited with code -9" in reason


def test_unknown_running_task_blames_the_oldest_held() -> None:
    a, b = task(1, 1), task(2, 1)
    plan = TaskRecovery(3, iter(range(9)).__next__).plan(WorkerFailed(0, "died", [a, b]), {1: a, 2: b})
    assert (a.attempt, b.attempt, plan.retries) == (1, 0, 1)


class FakeExecutor:
    num_workers = 2

    def __init__(self) -> None:
        self.killed: list[int] = []

    def running(self, w: int):
        return (5, 100.0) if w == 1 else None

    def kill(self, w: int) -> None:
        self.killed.append(w)


def test_watchdog_kills_only_overdue_workers_once() -> None:
    ex, dog = FakeExecutor(), Watchdog(2.0)
    assert dog.check(ex, now=101.0) == [] and dog.check(ex, now=103.0) == [1] and dog.check(ex, now=104.0) == []
    assert "task 5 timed out after 2 s" in dog.reason(1) and dog.reason(1) is None
    assert Watchdog(None).check(ex, now=1e9) == []


def test_errors_are_written_in_input_order_once_the_frontier_passes(tmp_path: Path) -> None:
    errors = OrderedErrors(ErrorSink(str(tmp_path / "e.jsonl")))
    errors.write([RecordError(9, 10, "b", "late"), RecordError(2, 3, "a", "early")])
    errors.release(5)
    assert errors.count == 1
    errors.release(10)
    errors.close()
    assert [line.split('"id":')[1][:3] for line in (tmp_path / "e.jsonl").read_text().splitlines()] == ['"a"', '"b"']


def test_errors_file_resume_truncates_to_the_committed_offset(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(b'{"committed":1}\n{"uncommitted":2}\n')
    sink = ErrorSink(str(path))
    sink.resume(16)
    sink.write([RecordError(0, 1, "x", "why")])
    sink.close()
    assert path.read_text().splitlines()[0] == '{"committed":1}' and "why" in path.read_text().splitlines()[1]
    ErrorSink(str(path)).resume(0)
    assert not path.exists()


def test_parquet_parts_assemble_byte_identically_whatever_the_commits(tmp_path: Path) -> None:
    rows = [{"id": i, "text": f"t{i}", "embedding": [0.5 * i, 1.0]} for i in range(250)]
    outputs = []
    for cut in ([250], [1, 99, 150], [7] * 35 + [5]):
        out = tmp_path / f"o{len(outputs)}.parquet"
        sink = PartedParquetSink(str(out), str(out) + ".parts", "id", "text", row_group_size=64)
        start = 0
        for n in cut:
            sink.write_rows(rows[start:start + n])
            sink.flush()
            start += n
        sink.close()
        resumed = PartedParquetSink(str(out), str(out) + ".parts", "id", "text", row_group_size=64, parts=sink.parts)
        resumed.finish()
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(tmp_path / "o0.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [64, 64, 64, 58]


def test_manifest_is_replaced_atomically(tmp_path: Path) -> None:
    path = str(tmp_path / "m.json")
    write_manifest(path, {"version": 1, "records_done": 5})
    write_manifest(path, {"version": 1, "records_done": 9})
    assert read_manifest(path)["records_done"] == 9 and not Path(path + ".tmp").exists()
    assert read_manifest(str(tmp_path / "none.json")) is None
