"""Run one shard inside a worker (sharded mode): read, batch, run, write the shard's parts.

``run_shard`` does for one shard what the record-mode driver does for the job: it reads the
shard's records, batches them with ``tasks.TaskBuilder``, runs each batch with the worker's
``run_task``, puts the rows back in input order with a ``merger.Merger`` and writes the output
and errors parts, fsynced before the ``ShardResult`` (sizes, SHA-256 digests) goes back (a part
that cannot be written: a ``WriteFailed`` instead, and the driver stops the job).
Windows are anchored at input positions (``batch.windows``), so a shard cut at window boundaries
forms record mode's batches; ``--batch-size auto`` runs the job's fixed batch size (its tuner
only sizes record mode's tasks). ``BatchWatchdog`` enforces ``--task-timeout`` per batch. How: docs/sharded.md, "The driver and the shard runner
(code)" and "`--task-timeout` and `--batch-size auto`".
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable

from parainfer.executors.base import ShardResult, ShardTask, WriteFailed
from parainfer.io.shards.reader import shard_records
from parainfer.io.shards.plan import shard_lines
from parainfer.io.shards.part_sinks import open_part
from parainfer.io.safe_files import open_file
from parainfer.io.sinks import ErrorSink, write_rows_each
from parainfer.batch.length_estimate import LengthEstimator
from parainfer.batch.merger import Merger
from parainfer.records import Record, RecordError
from parainfer.batch.tasks import TaskBuilder
from parainfer.batch.windows import WindowReader
from parainfer.counts import TokenCounts


def run_shard(predictor: Any, task: ShardTask, worker_id: int, t_received: float,
              run_task: Callable[..., Any]) -> ShardResult | WriteFailed:
    """Run ``task`` on the loaded ``predictor``; returns its ShardResult.

    ``run_task(predictor, task, worker_id, t_received) -> TaskResult`` runs one batch (passed
    in to keep this module free of the worker's process code). When a part cannot be written
    (a full disk, a file size limit, an I/O error) returns ``WriteFailed`` with the OSError
    naming the part, at once: the driver stops the job (``recovery.on_write_failed``); the
    worker raises nothing and prints nothing. Any other error (reading the input) raises."""
    try:
        return _run_shard(predictor, task, worker_id, t_received, run_task)
    except _PartUnwritable as e:
        return WriteFailed(task.index, worker_id, e.error)


class _PartUnwritable(Exception):
    """A write to one of the shard's parts failed; ``error``: the OSError, naming the part."""

    def __init__(self, error: OSError):
        super().__init__(str(error))
        self.error = error


@contextlib.contextmanager
def _writing(path: str) -> Iterator[None]:
    """Turn an OSError of the writes inside into ``_PartUnwritable``; an error that names no
    file (a write the format library made) is named ``path``. Read errors stay outside."""
    try:
        yield
    except OSError as e:
        raise _PartUnwritable(OSError(e.errno or errno.EIO, e.strerror or str(e), e.filename or path)) from None


def _run_shard(predictor: Any, task: ShardTask, worker_id: int, t_received: float,
               run_task: Callable[..., Any]) -> ShardResult:
    """``run_shard``'s work; raises ``_PartUnwritable`` when a part cannot be written."""
    t_start = time.perf_counter()
    b = task.batch
    max_chars = predictor.max_input_chars()
    estimate = LengthEstimator(max_chars=max_chars)
    bucket = b["bucket_window"] > 1
    builder = TaskBuilder(estimate, predictor.window(), b["batch_size"], b["max_batch_tokens"], bucket,
                          max_chars=max_chars)
    window = b.get("window") or (b["bucket_window"] if bucket else b["batch_size"])
    merger = Merger(b["id_column"], b["text_column"], own_rows=b["own_rows"])
    counts = TokenCounts()
    with _writing(task.errors_part):
        errors = ErrorSink(task.errors_part)
        errors.resume(0)  # a stale errors part of an earlier attempt
    # Windows anchored at input positions (``windows.py``): a shard cut at window boundaries
    # (``io.shards.plan``) forms exactly record mode's batches.
    records = WindowReader(shard_records(task.input, task.shard), window)
    with _writing(task.part):
        sink = open_part(task.part, b.get("format", ".jsonl"), b["id_column"], b["text_column"], b.get("header"),
                         b.get("with_header", False))
    watchdog = BatchWatchdog(b.get("task_timeout"), timeout_note(task.part), worker_id)
    batches = _BatchRunner(predictor, run_task, worker_id, builder, estimate, merger, counts, watchdog)
    with watchdog:
        while True:
            items = records.next()
            if not items:
                break
            failed = batches.run_window(items)
            rows = merger.drain()
            with _writing(task.part):
                unwritable = write_rows_each(sink, rows, merger.last_drained, b["id_column"])
                merger.failed += len(unwritable)
                failed.extend(unwritable)
                failed.sort(key=lambda e: e.seq)
                errors.write(failed)
    with _writing(task.part):
        sink.close()  # flushed and fsynced (Parquet: the footer written, the file hashed)
        errors.flush()
        err_bytes = errors.offset
        errors.close()
    return ShardResult(task.index, worker_id, records=merger.next_seq, failed=merger.failed,
                       out_bytes=sink.bytes_written, out_sha256=sink.digest.hexdigest(), err_bytes=err_bytes,
                       err_sha256=errors.digest.hexdigest(), t_received=t_received, t_start=t_start,
                       t_end=time.perf_counter(), counts=counts, batches=builder.stats.tasks,
                       lines=shard_lines(task.input.path, task.shard), header=getattr(sink, "header", None),
                       batch_size=builder.batch_size)


class _BatchRunner:
    """Runs one window of a shard's records batch by batch (``run_window``), feeding the merger,
    the token counts and the length estimate (reported; batches never use it)."""

    def __init__(self, predictor: Any, run_task: Callable[..., Any], worker_id: int, builder: TaskBuilder,
                 estimate: LengthEstimator, merger: Merger, counts: TokenCounts, watchdog: BatchWatchdog):
        self.predictor, self.run_task, self.worker_id = predictor, run_task, worker_id
        self.builder, self.estimate, self.merger, self.counts = builder, estimate, merger, counts
        self.watchdog = watchdog

    def run_window(self, items: list[Record | RecordError]) -> list[RecordError]:
        """Run the records of ``items``; returns the records that failed (read or run), not sorted."""
        merger, builder, watchdog = self.merger, self.builder, self.watchdog
        failed: list[RecordError] = []
        good = [r for r in items if isinstance(r, Record)]
        for err in items:
            if isinstance(err, RecordError):
                merger.fail(err)
                failed.append(err)
        merger.expect(good)
        for batch in builder.build(good):
            watchdog.arm(batch.index)
            res = self.run_task(self.predictor, batch, self.worker_id, time.perf_counter())
            watchdog.disarm()
            if res.counts is not None:
                self.counts.add(res.counts)
                self.estimate.observe(res.counts)
            for pos, reason in res.errors:
                rec = merger.record(batch.seqs[pos])
                err = RecordError(batch.seqs[pos], rec.line, rec.id, reason, text=batch.texts[pos])
                merger.fail(err)
                failed.append(err)
            merger.complete(batch.seqs, res.outputs)
        return failed


def timeout_note(part: str) -> str:
    """Where a worker notes why it killed itself on ``--task-timeout`` (next to its part)."""
    return part + ".timeout"


class BatchWatchdog:
    """Kills this worker process (SIGKILL) when one batch runs longer than ``timeout_s``.

    ``arm(batch_index)`` before a batch, ``disarm()`` after it; a daemon thread checks every
    ``min(1, timeout_s / 10)`` s. Before the kill it writes the reason to ``note`` (the driver
    reads it, ``shard_mode.ShardDriver``). None or 0: does nothing. A model that hangs in native
    code holding the GIL cannot be stopped from a thread (the thread never runs): that one
    only the driver could kill; a sleep, I/O, torch op or Python loop releases it.
    """

    def __init__(self, timeout_s: float | None, note: str, worker_id: int):
        self.timeout_s, self.note, self.worker_id = timeout_s, note, worker_id
        self._since: float | None = None
        self._batch = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> BatchWatchdog:
        if self.timeout_s:
            self._thread = threading.Thread(target=self._watch, name="parainfer-batch-watchdog", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def arm(self, batch_index: int) -> None:
        self._batch, self._since = batch_index, time.monotonic()

    def disarm(self) -> None:
        self._since = None

    def _watch(self) -> None:
        assert self.timeout_s
        step = min(1.0, self.timeout_s / 10)
        while not self._stop.wait(step):
            since = self._since
            if since is not None and time.monotonic() - since > self.timeout_s:
                try:
                    with open_file(self.note, "w", "timeout note") as f:
                        f.write(f"batch {self._batch} of the shard timed out after {self.timeout_s:g} s "
                                f"(--task-timeout); worker {self.worker_id} killed")
                except (OSError, ValueError):
                    pass  # no note (a full disk, a link put there): the driver names the death without the reason
                os.kill(os.getpid(), signal.SIGKILL)
