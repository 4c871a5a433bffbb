"""The worker process: load one model replica, then run tasks from its queue until told to stop.

A batch whose ``predict`` raises is retried record by record, so one bad record fails alone
(its reason goes back to the driver) and the rest of the batch succeeds. A worker runs its
queue strictly in order, so the driver knows which task it is running without being told
(one message per task, not two). Workers ignore SIGINT (a terminal Ctrl-C is the driver's to
handle) and exit when the driver process is gone (no orphans after a driver SIGKILL).
"""

from __future__ import annotations

import queue
import time
import traceback
from typing import Any

from parainfer.executors.base import WARM_ENV, ShardTask, Task, TaskResult, WorkerFailed, WorkerReady
from parainfer.models.base import Predictor, RecordFailure
from parainfer.counts import TokenCounts
from parainfer.executors.worker_env import driver_gone, enter_worker_process, pin_torch_threads, place_predictor


def _describe_error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def run_task(predictor: Predictor, task: Task, worker_id: int, t_received: float) -> TaskResult:
    """Run one task on a loaded predictor; per-record fallback when a batch raises.

    A task of several batches (``Task.batches``) runs each batch as its own ``predict`` call.
    The result carries the task's exact token counts (the predictor tokenised the texts here,
    in the worker; the driver only estimated them)."""
    t_start = time.perf_counter()
    errors: list[tuple[int, str]] = []
    outputs: list[dict[str, Any] | None] = []
    counts: TokenCounts | None = TokenCounts()
    start = 0
    for size in task.batches or [len(task.texts)]:
        texts = task.texts[start:start + size]
        outputs.extend(_run_batch(predictor, texts, start, errors))
        try:
            batch_counts = predictor.token_counts(texts)
        except Exception:  # noqa: BLE001 - counts are for the report; a record that cannot be counted failed above
            batch_counts = None
        if counts is not None and batch_counts is not None:
            counts.add(batch_counts)
        else:
            counts = None
        start += size
    if task.rows is None:
        return TaskResult(task.index, worker_id, outputs, errors, t_received, t_start, time.perf_counter(), counts)
    encoded, unwritable, renamed = encode_rows(task, outputs)
    return TaskResult(task.index, worker_id, [], errors, t_received, t_start, time.perf_counter(), counts,
                      encoded, unwritable, renamed)


def _run_batch(predictor: Predictor, texts: list[Any], offset: int,
               errors: list[tuple[int, str]]) -> list[dict[str, Any] | None]:
    """Outputs of one ``predict`` call over ``texts``, record by record when the batch raises;
    appends (offset + position, reason) to ``errors`` for each record that failed."""
    try:
        outputs: list[dict[str, Any] | None] = list(predictor.predict(texts))
        if len(outputs) != len(texts):
            raise ValueError(f"model returned {len(outputs)} outputs for {len(texts)} texts")
    except Exception:
        outputs = []
        for pos, text in enumerate(texts):
            try:
                outputs.append(predictor.predict([text])[0])
            except Exception as e:  # noqa: BLE001 - any model error quarantines the record
                outputs.append(None)
                errors.append((offset + pos, f"model error: {_describe_error(e)}"))
    for pos, out in enumerate(outputs):
        if isinstance(out, RecordFailure):
            outputs[pos] = None
            errors.append((offset + pos, out.reason))
    return outputs


def encode_rows(task: Task, outputs: list[dict[str, Any] | None]) -> tuple[list[bytes | None],
                                                                           list[tuple[int, Any, str]], list[str]]:
    """Build each record's output row (``merger.build_row``) and encode it as a JSONL line
    (``io.sinks.encode_jsonl_row``): the same bytes the driver's merger and sink would write.

    Returns (lines: None where the model failed the record or the row cannot be encoded;
    unwritable: (position, row id, reason) for each row JSON cannot hold; the renamed input
    columns). Needs ``task.rows``."""
    from parainfer.io.sinks import encode_jsonl_row, unwritable_reason
    from parainfer.io.rows import build_row

    rows = task.rows
    id_column, text_column, own = rows.columns
    first = (id_column, text_column)
    texts = rows.full_texts if rows.full_texts is not None else task.texts
    renamed: set[str] = set()
    lines: list[bytes | None] = []
    unwritable: list[tuple[int, Any, str]] = []
    for pos, out in enumerate(outputs):
        if out is None:
            lines.append(None)
            continue
        row = build_row(id_column, text_column, own, rows.ids[pos], texts[pos], rows.extras[pos], out, renamed)
        try:
            lines.append(encode_jsonl_row(row, first))
        except (ValueError, TypeError) as e:
            lines.append(None)
            unwritable.append((pos, row.get(id_column), unwritable_reason(e)))
    return lines, unwritable, sorted(renamed)


def worker_main(worker_id: int, predictor: Predictor, inbox: Any, outbox: Any, threads: int | None,
                env: dict[str, str]) -> None:
    """Process entry point. ``inbox`` yields Task objects, then None to stop."""
    started_at = time.perf_counter()
    enter_worker_process(worker_id, threads, env)
    t0 = time.perf_counter()
    place_predictor(predictor, worker_id, threads)
    pin_torch_threads(threads)
    try:
        predictor.load()
        pin_torch_threads(threads)
    except BaseException as e:  # noqa: BLE001 - report any load failure to the driver
        outbox.send(WorkerFailed(worker_id, f"model failed to load: {_describe_error(e)}\n"
                                f"{traceback.format_exc(limit=3)}", [], fatal=True))
        return
    load_s = time.perf_counter() - t0
    phases = dict(getattr(predictor, "load_phases", {}))
    phases["load_other_s"] = max(0.0, load_s - sum(phases.values()))  # imports the predictor's phases missed
    phases["started_at"] = started_at
    outbox.send(WorkerReady(worker_id, load_s, predictor.describe(), phases))
    _warm(env.get(WARM_ENV, ""))
    while True:
        try:
            task = inbox.get(timeout=1.0)
        except queue.Empty:
            if driver_gone():  # the driver died (SIGKILL): nobody will read our results
                return
            continue
        if task is None:
            break
        try:
            if isinstance(task, ShardTask):
                outbox.send(task.runner(predictor, task, worker_id, time.perf_counter(), run_task))
            else:
                outbox.send(run_task(predictor, task, worker_id, time.perf_counter()))
        except (BrokenPipeError, EOFError):  # the driver is gone
            return


def _warm(modules: str) -> None:
    """Import ``modules`` (comma-separated: ``pool.start_workers``'s ``warm``, the shard runner's
    readers, sinks, merger: ~0.15 s of imports) in a background thread once the model is loaded,
    so a worker's first shard does not wait for them."""
    import importlib
    import threading

    def _load() -> None:
        for name in filter(None, modules.split(",")):
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - the first shard imports it again and reports the error
                pass

    if modules:
        threading.Thread(target=_load, name="parainfer-preload", daemon=True).start()

