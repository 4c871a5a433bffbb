"""Record mode: the driver reads every record and hands out tasks (batches of records).

One thread in the driver does everything between the workers, in a loop of three steps:
create tasks (while the reorder buffer and the policy's queue have room), dispatch tasks to
workers with room (at most ``prefetch`` queued per worker besides the running one), and
handle events (results are merged and written in input order at once). Worker model loading
overlaps with reading and tokenising the first windows of input. Faults (docs/fault-tolerance.md):
a dead or hung worker's tasks go through ``recovery.TaskRecovery`` (requeue, bisect, quarantine);
the checkpoint commits the written prefix every few seconds and makes a rerun resume; the first
SIGINT/SIGTERM stops dispatching, lets in-flight tasks finish, commits and raises ``Interrupted``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

from parainfer.batch.length_estimate import LengthEstimator
from parainfer.batch.merger import Merger
from parainfer.batch.monitor import Progress
from parainfer.batch.recovery import GracefulStop, Interrupted, TaskRecovery, Watchdog, on_worker_failed
from parainfer.batch.report import Determinism, TimingReport, already_complete, close_run, startup_so_far, write_report
from parainfer.batch.setup import JobSetup, on_worker_ready, pin_numerics, record_numerics, start_workers
from parainfer.batch.tasks import TaskBuilder
from parainfer.batch.windows import WindowReader, from_window_start
from parainfer.counts import TokenCounts
from parainfer.errors import StorageError, storage_message
from parainfer.executors.base import Task, TaskResult, WorkerFailed, WorkerReady, WorkerRetired
from parainfer.executors.pool import Workers
from parainfer.io.checkpoint import Checkpoint
from parainfer.io.sinks import JsonlSink, write_rows_each
from parainfer.io.sources import count_records
from parainfer.platform.resources import cores, warn_cores
from parainfer.records import Record, RecordError
from parainfer.scheduling import make_policy


# Longest wait for a worker event while the driver has nothing else to do (seconds): also the
# granularity of the watchdog, the checkpoint clock and a stop request while idle.
IDLE_POLL_S = 0.25
# Longest idle wait without a --task-timeout (``RecordDriver._idle_timeout``): how soon a stop
# request is seen; each idle wake-up costs the driver CPU, counted per record on a slow model's job.
IDLE_MAX_S = 1.0
# Result gathering (``RecordDriver._gather``): sleep up to this fraction of the smallest live
# task's time at the fastest recent rate, at most GATHER_MAX_S seconds, while every worker has
# a full queue.
GATHER_FRACTION = 0.8
GATHER_MAX_S = 0.2
# Task groups (``setup.TASK_GROUP``) are formed as long as a window still makes
# WINDOW_TASKS_PER_SLOT tasks for each place in the workers' queues.
TAIL_WINDOWS = 2  # the input's last windows that are not grouped
WINDOW_TASKS_PER_SLOT = 1


@dataclass
class _State:
    """Mutable bookkeeping of one run."""

    ready: set[int] = field(default_factory=set)
    t_first_dispatch: float | None = None
    t_last_result: float = 0.0
    source_done: bool = False
    dispatched: int = 0
    announced: set[str] = field(default_factory=set)  # renamed input columns already announced
    stall_warned: bool = False
    t_spawn: float = 0.0  # when the executor was asked to start the workers
    ready_phases: list[dict[str, float]] = field(default_factory=list)  # WorkerReady.phases of the first load
    counted: TokenCounts = field(default_factory=TokenCounts)  # exact, summed over results
    recent_s_per_record: float = 0.0  # fastest busy seconds per record of the last results (RecordDriver._gather)
    done: bool = False  # every record read, run and written


class RecordDriver:
    """Runs a job in record mode (``Driver``): ``run(workers)`` returns the report dict.

    Args:
        setup: the job's ``JobSetup``. ``num_workers`` starts as the setup's and shrinks when
            the replicas do not fit in memory (``executors.pool.start_workers``).

    ``run`` raises JobError when the workers cannot run the model, StorageError when the
    output cannot be written, Interrupted after a SIGINT/SIGTERM (the checkpoint is committed).
    """

    def __init__(self, setup: JobSetup):
        self.setup, self.config, self.predictor = setup, setup.config, setup.predictor
        self.source, self.store, self.tuner = setup.source, setup.store, setup.tuner
        self.num_workers = setup.num_workers
        self.bucket, self.window, self.max_buffered = setup.bucket, setup.window, setup.max_buffered
        # Workers build and encode the output rows of a JSONL output (``executors.base.RowInfo``): the
        # driver only writes their bytes in order. False: the driver's merger and sink do it.
        self.encode_in_workers = setup.encode_in_workers
        # Batches joined per task (``tasks.group_tasks``) while the input lasts: one message
        # and one result for up to TASK_GROUP batches, the same batches; a window still makes a
        # task for each place in the workers' queues, and the last window is not grouped, so
        # the load stays balanced and the job's tail fine-grained.
        self.task_group = setup.task_group
        self.monitor: Any = None  # a ``monitor.JobMonitor`` that shows this run (``--dashboard``), or None
        self._state: _State | None = None

    def run(self, workers: Workers | None = None) -> dict[str, Any]:
        """Run the job to the end on ``workers`` (None: start them here and shut them down at
        the end); returns the report dict (also written to config.report)."""
        cfg = self.config
        t0 = time.perf_counter()
        ckpt = self._open()
        if ckpt.finished:
            return already_complete(self._report, t0, cfg.report, resumed_records=ckpt.resumed_records,
                                    resumed_failed_records=ckpt.resumed_failed, checkpoint=ckpt.path,
                                    errors_file=ckpt.errors.path if ckpt.resumed_failed else None)
        own = workers is None
        t_spawn = time.perf_counter()
        workers = self._attach(self._start() if own else workers)
        progress = Progress(self._total, enabled=not cfg.quiet)
        state = _State(ready=workers.ready, t_spawn=t_spawn)  # shared: what this job learns, the next one knows
        self._state, self._t0 = state, t0
        if self.monitor is not None:
            self.monitor.watch(self)
        for event in workers.take_pending():
            self._handle(event, state)
        # A resume restarts at the window that holds the first uncommitted record (windows.py):
        # that window's committed records run again in their batches, and are not written again.
        records = WindowReader(from_window_start(iter(self.source), ckpt.resumed_records, self.window), self.window)
        stop = GracefulStop(on_abort=self._kill_workers)
        try:
            self._loop(records, state, stop, progress, t0)
        except OSError as e:  # a full disk, a file size limit: what is committed stays valid
            state.done = False
            raise StorageError(storage_message(e, cfg.output, ckpt.committed_records, ckpt.path)) from None
        finally:
            self._close(workers, state.done, own, progress)
        if not state.done:
            raise Interrupted(self._merger.next_seq, ckpt.path)
        return self._finish(self._report, state, self._merger, t0)

    def _open(self) -> Any:
        """The run's policy, task builder, report and merger, and its checkpoint (returned)."""
        cfg = self.config
        self._policy = make_policy(cfg.policy, self.num_workers)
        # The batch size is fixed for the whole job (``--batch-size auto`` included: its tuner
        # only sets how many batches go in one task, ``_group``), so batches never depend on timing.
        self._estimate = LengthEstimator()  # the driver estimates lengths; workers tokenise
        self._builder = TaskBuilder(self._estimate, None, self.setup.batch_size, cfg.max_batch_tokens, self.bucket)
        self._report = TimingReport(workers=self.num_workers, policy=cfg.policy)
        self._merger = merger = Merger(cfg.id_column, cfg.text_column, own_rows=self.predictor.writes_own_rows)
        self._ckpt = ckpt = self.store or Checkpoint(cfg, self.source, self.predictor)
        if ckpt.finished:
            return ckpt
        self._errors = ckpt.errors
        self._determinism = Determinism.from_dict(getattr(ckpt, "determinism", None))
        ckpt.determinism_state = self._determinism.to_dict
        self._threads, notes = pin_numerics(ckpt, self.predictor, cfg)
        for note in notes:
            self._determinism.note(note)
        merger.next_seq = ckpt.resumed_records
        self._encoded = self.encode_in_workers and isinstance(ckpt.sink, JsonlSink)
        if self._encoded:
            self._builder.row_columns = (cfg.id_column, cfg.text_column, self.predictor.writes_own_rows)
            merger.expect_encoded(ckpt.resumed_records)
        return ckpt

    def _start(self) -> Workers:
        """Start this run's own workers (the output sink is closed when they cannot start)."""
        cfg = self.config
        if cfg.executor == "local":
            warn_cores(self.num_workers, cfg.device, cores())
        try:
            return start_workers(self.predictor, self.num_workers, self._threads, cfg)
        except BaseException:
            self._ckpt.sink.close()
            raise

    def _attach(self, workers: Workers) -> Workers:
        """Run on ``workers``: fewer than asked when the replicas did not fit; returns them."""
        cfg = self.config
        if workers.num_workers < self.num_workers:  # the replicas did not fit: fewer workers, same job
            self.num_workers = workers.num_workers
            self._policy = make_policy(cfg.policy, self.num_workers)
            self._report = TimingReport(workers=self.num_workers, policy=cfg.policy)
        self._executor = workers.executor
        if workers.model_info is not None:
            self._report.extra["model"] = workers.model_info
        self._total = getattr(self.source, "total", None) or count_records(cfg.input)  # None: unknown (stdin)
        self._builder.max_input_tokens = self.predictor.window()
        self._builder.max_chars = self._estimate.max_chars = self.predictor.max_input_chars()
        self._tasks: dict[int, Task] = {}
        self._watchdog = Watchdog(cfg.task_timeout)
        self._recovery = TaskRecovery(cfg.max_retries, self._new_task_index)
        self._workers = workers
        return workers

    def _loop(self, records: WindowReader, state: _State, stop: GracefulStop,
              progress: Progress, t0: float) -> None:
        """The job loop until every record is written (``state.done``) or a stop request ends
        it; then the last rows are written and the checkpoint finished (or committed)."""
        report, ckpt, merger = self._report, self._ckpt, self._merger
        cpu0, thread0 = time.process_time(), time.thread_time()
        with ckpt.sink, stop:
            while True:
                if not stop.requested and not state.source_done and self._has_room():
                    self._create_tasks(records, state)
                if not stop.requested:
                    self._dispatch(state)
                state.done = state.source_done and not self._tasks
                if state.done or (stop.requested and self._stop_now(stop.deadline)):
                    break
                busy = state.source_done or not self._has_room() or stop.requested
                if busy and not stop.requested:
                    self._gather(state)
                # Nothing to create: sleep until an event (a result wakes the poll at once).
                # A longer timeout only spaces out the idle wake-ups, whose CPU would count
                # against the driver for the whole of a slow model's job.
                for event in self._executor.poll(timeout=self._idle_timeout(state) if busy else 0.0):
                    self._handle(event, state)
                self._watchdog.check(self._executor)
                self._after_events(state, progress, t0)
            self._write_drained()  # records failed while reading the last window
            (ckpt.finish if state.done else ckpt.commit)(merger.next_seq, merger.failed)
            report.extra["driver_busy_s"] = time.process_time() - cpu0
            report.extra["driver_thread_s"] = time.thread_time() - thread0

    def _after_events(self, state: _State, progress: Progress, t0: float) -> None:
        """Write what the merger released, print due notices, advance the checkpoint and the
        progress bar (counted as writing time)."""
        t = time.perf_counter()
        self._write_drained()
        self._notices(state)
        self._ckpt.advance(self._merger.next_seq, self._merger.failed)
        self._report.t_write_s += time.perf_counter() - t
        elapsed = time.perf_counter() - (state.t_first_dispatch or t0)
        progress.update(self._merger.next_seq, self._merger.next_seq / elapsed if elapsed > 0 else 0.0)

    def _close(self, workers: Workers, done: bool, own: bool, progress: Progress) -> None:
        """After the loop, whatever ended it: kill the workers of an unfinished run (not to be
        reused), shut down this run's own, close the errors file."""
        progress.close()
        if not done:
            self._kill_workers()
            workers.broken = True
        if own:
            workers.shutdown()
        try:
            self._errors.close()
        except OSError:
            pass  # already reported; the errors file's committed prefix is intact

    def _write_drained(self) -> None:
        """Write what the merger releases: the workers' encoded lines, or rows to encode here."""
        if self._encoded:
            data, lines = self._merger.drain_encoded()
            if lines:
                self._ckpt.sink.write_encoded(data, lines)
            return
        rows = self._merger.drain()
        if rows:
            self._write_rows(rows)

    def _write_rows(self, rows: list[dict[str, Any]]) -> None:
        """Write drained rows; a row the output format cannot hold goes to the errors file alone,
        the rest is written (``io.sinks.write_rows_each``)."""
        failed = write_rows_each(self._ckpt.sink, rows, self._merger.last_drained, self.config.id_column)
        if failed:
            self._merger.failed += len(failed)
            self._errors.write(failed)

    def _notices(self, state: _State) -> None:
        """One stderr line each, once: input columns renamed in the output, and a job where no
        task has finished for ``stall_warning_s`` while no --task-timeout would end a hung call."""
        if self._merger.renamed - state.announced:
            new = sorted(self._merger.renamed - state.announced)
            state.announced.update(new)
            print(f"note: input column{'s' if len(new) > 1 else ''} {', '.join(map(repr, new))} written as "
                  f"{', '.join(repr('input_' + c) for c in new)} (the model's result uses that name)", file=sys.stderr)
        since = state.t_last_result or state.t_first_dispatch
        if (self.config.task_timeout is None and not state.stall_warned and self._tasks and since is not None
                and time.perf_counter() - since > self.config.stall_warning_s):
            state.stall_warned = True
            print(f"warning: no task has finished for {self.config.stall_warning_s:.0f} s ({len(self._tasks)} tasks "
                  "waiting); a hung model call is never interrupted without --task-timeout SECONDS", file=sys.stderr)

    def _idle_timeout(self, state: _State) -> float:
        """How long the driver may wait for the next worker event when it has nothing to create:
        until the next checkpoint commit is due (none while nothing new was written), at most
        IDLE_MAX_S (how soon a stop request is seen), and IDLE_POLL_S with a --task-timeout
        (the watchdog's granularity) or while a stall warning may be due. A result wakes it at once."""
        if self.config.task_timeout or not state.stall_warned:
            limit = IDLE_POLL_S if self.config.task_timeout else min(IDLE_MAX_S, self.config.stall_warning_s / 4)
        else:
            limit = IDLE_MAX_S
        return min(limit, self._ckpt.due_in(self._merger.next_seq))

    def _gather(self, state: _State) -> None:
        """Let results gather before the next wake-up while every worker has work queued.

        Each wake-up of the driver costs it a fixed amount of CPU (scheduling, cold caches,
        the loop's bookkeeping) whatever it then handles; waking once per result makes that
        a cost per task. When every ready worker holds its running task *and* a full queue
        (``prefetch`` tasks), none can run dry before it has run a whole queued task, so the
        driver may sleep for a fraction (``GATHER_FRACTION``) of the time the smallest live
        task takes at the fastest rate seen lately (``state.recent_s_per_record``) and then
        handle every result that came in at once. Never sleeps longer than ``GATHER_MAX_S`` (a
        stop request, the watchdog and the checkpoint clock wait at most that much longer)."""
        if not state.ready or state.recent_s_per_record <= 0.0 or not self._tasks:
            return
        full = self.config.prefetch + 1
        if any(self._executor.in_flight(w) < full for w in state.ready):
            return
        smallest = min(len(t) for t in self._tasks.values())
        time.sleep(min(GATHER_MAX_S, GATHER_FRACTION * state.recent_s_per_record * smallest))

    def _stop_now(self, deadline: float) -> bool:
        """After a stop request: True once no task is in flight, or the grace time is over."""
        idle = all(self._executor.in_flight(w) == 0 for w in range(self.num_workers))
        return idle or time.perf_counter() > deadline

    def _kill_workers(self) -> None:
        for w in range(self.num_workers):
            self._executor.kill(w)

    def _new_task_index(self) -> int:
        """A fresh Task.index (for the halves of a bisected task); counted in the report's tasks."""
        index = self._builder.stats.tasks
        self._builder.stats.tasks += 1
        return index

    def _has_room(self) -> bool:
        return (self._policy.pending() < 2 * self.num_workers * (self.config.prefetch + 1)
                and self._merger.buffered < self.max_buffered)

    def _create_tasks(self, records: WindowReader, state: _State) -> None:
        """Cut the next window of the input (``windows.WindowReader``: anchored at input
        positions, so the same records make the same batches in every run) into tasks."""
        t = time.perf_counter()
        window: list[Record] = []
        resumed = self._ckpt.resumed_records
        items = records.next()
        for item in items:
            if isinstance(item, RecordError):
                self._quarantine(item)
            else:
                window.append(item)
        self._report.records += sum(1 for item in items if item.seq >= resumed)
        state.source_done = records.done
        if not self._encoded:
            self._merger.expect(window)
        elif window:
            self._merger.expect_encoded(window[-1].seq + 1)
        # The last windows are not grouped (a fine-grained tail keeps the workers' finish even,
        # a straggler's included): the input's last two full windows and what follows them,
        # where the number of records is known, else the last window.
        read = self._report.records + self._ckpt.resumed_records
        tail = state.source_done or (self._total is not None and self._total - read < TAIL_WINDOWS * self.window)
        self._builder.group = 1 if tail else self._group()
        # Enough tasks a window to keep every worker's queue full: WINDOW_TASKS_PER_SLOT x workers
        # x (prefetch + 1).
        self._builder.min_tasks = WINDOW_TASKS_PER_SLOT * self.num_workers * (self.config.prefetch + 1)
        tasks = self._builder.build(window)
        for task in tasks:
            if self.tuner:  # the tuner's size in records a task, judged by ``_on_result``
                task.batch_size = self.tuner.current
            self._tasks[task.index] = task
        self._policy.add_tasks(tasks)
        self._report.t_create_s += time.perf_counter() - t

    def _group(self) -> int:
        """Most batches joined in one task: ``task_group``; under ``--batch-size auto`` the
        tuner's current size (records a task) over the job's fixed batch size. Grouping never
        changes the batches themselves (the worker runs each as its own call)."""
        if self.tuner is None:
            return self.task_group
        return max(1, self.tuner.current // self._builder.batch_size)

    def _dispatch(self, state: _State) -> None:
        t = time.perf_counter()
        prefetch = self.config.prefetch
        for w in sorted(state.ready):
            while self._executor.in_flight(w) <= prefetch:
                task = self._policy.next_task(w)
                if task is None:
                    break
                if state.t_first_dispatch is None:
                    state.t_first_dispatch = time.perf_counter()
                self._executor.submit(w, task)
                state.dispatched += 1
        self._report.t_schedule_s += time.perf_counter() - t

    def _handle(self, event: Any, state: _State) -> None:
        t = time.perf_counter()
        if isinstance(event, WorkerReady):
            on_worker_ready(event, self._workers, self._report, state.ready_phases)
            record_numerics(self._ckpt, event.info, self._executor.threads, self._determinism, self.predictor)
        elif isinstance(event, TaskResult):
            self._on_result(event, state)
        elif isinstance(event, WorkerFailed):
            on_worker_failed(event, self._workers, self._report, self._recover)
        elif isinstance(event, WorkerRetired):  # an elastic executor's worker left; it held no task
            self._workers.ready.discard(event.worker_id)
        self._report.t_schedule_s += time.perf_counter() - t

    def _on_result(self, res: TaskResult, state: _State) -> None:
        task = self._tasks.pop(res.task_index, None)
        if task is None:  # a duplicate from a task given out twice: exactly once wins
            return
        busy = res.t_end - res.t_start
        # The fastest rate lately (seconds per record): follows a drop at once, a rise slowly.
        rate, recent = busy / max(1, len(task)), state.recent_s_per_record
        state.recent_s_per_record = rate if not recent else min(rate, 0.9 * recent + 0.1 * rate)
        if res.counts is not None:  # exact, from the worker's tokenizer: replaces the estimate
            task.tokens, task.padded_tokens = res.counts.real, res.counts.padded
            self._estimate.observe(res.counts)
            state.counted.add(res.counts)
        stats = self._report.per_worker[res.worker_id]
        stats.busy_s += busy
        stats.tasks += 1
        stats.records += len(task)
        state.t_last_result = time.perf_counter()
        origin = state.t_first_dispatch or 0.0
        self._report.timeline.append([task.index, res.worker_id, round(res.t_start - origin, 6),
                                      round(res.t_end - origin, 6), len(task), task.tokens, task.padded_tokens,
                                      task.attempt, len(res.errors)])
        for pos, reason in res.errors:
            self._fail_record(task, pos, reason)
        if res.encoded is None:
            self._merger.complete(task.seqs, res.outputs)
        else:
            for pos, rid, reason in res.unwritable:  # as _write_rows: no text in the errors file
                self._quarantine(RecordError(task.seqs[pos], task.rows.lines[pos] if task.rows else 0, rid, reason))
            self._merger.renamed.update(res.renamed)
            self._merger.complete_encoded(task.seqs, res.encoded)
        self._policy.on_task_done(res.worker_id, task, busy)
        if self.tuner:
            # Judge sizes by compute plus the driver's per-task cost (dispatch, IPC, merge), so
            # a cheap model still learns that tiny tasks waste the driver.
            per_task_driver_s = self._report.t_schedule_s / max(1, state.dispatched)
            self.tuner.observe(task.batch_size, task.tokens, busy + per_task_driver_s, time.perf_counter() - origin)

    def _fail_record(self, task: Task, pos: int, reason: str) -> None:
        seq = task.seqs[pos]
        if task.rows is not None:  # the task carries its records' ids and lines (encoded rows)
            line, rid = task.rows.lines[pos], task.rows.ids[pos]
        else:
            rec = self._merger.record(seq)
            line, rid = (rec.line, rec.id) if rec else (0, None)
        self._quarantine(RecordError(seq=seq, line=line, id=rid, reason=reason, text=task.texts[pos]))

    def _quarantine(self, err: RecordError) -> None:
        """A record that failed: skipped in the output, written to the errors file (not when a
        resume computed it again: its seq is committed already, exactly once)."""
        if err.seq < self._ckpt.resumed_records:
            return
        self._merger.fail(err)
        self._errors.write([err])

    def _recover(self, event: WorkerFailed) -> None:
        """Give out again or fail the tasks a restarted worker held (``recovery.TaskRecovery``)."""
        for task in event.tasks:  # split or failed tasks leave the dead worker's backlog too
            self._policy.forget(task)
        plan = self._recovery.plan(event, self._tasks, self._watchdog.reason(event.worker_id))
        for task, reason in plan.failed:
            for pos in range(len(task)):
                self._fail_record(task, pos, reason)
        for task in plan.requeue:
            self._policy.requeue(task)
        for task in plan.rebatched:
            for pos, seq in enumerate(task.seqs):
                rec = self._merger.record(seq)
                self._determinism.rebatch(seq, task.rows.ids[pos] if task.rows else rec.id if rec else None)
        self._report.retries += plan.retries
        self._report.extra["bisected_tasks"] = self._report.extra.get("bisected_tasks", 0) + plan.bisected

    def _finish(self, report: TimingReport, state: _State, merger: Merger, t0: float) -> dict[str, Any]:
        ckpt = self._ckpt
        counted = state.counted  # exact counts of the tasks that ran (the workers tokenised them)
        close_run(report, t0=t0, t_spawn=state.t_spawn, ready_phases=state.ready_phases,
                  t_first=state.t_first_dispatch, t_last=state.t_last_result, counts=counted,
                  busy=report.extra.get("driver_busy_s", 0.0), predictor=self.predictor, executor=self._executor,
                  resumed=ckpt.resumed_records, resumed_failed=ckpt.resumed_failed, checkpoint=ckpt.path)
        report.tasks = self._builder.stats.tasks
        report.extra["batches"] = self._builder.stats.batches  # a task joins up to TASK_GROUP batches
        report.extra["most_batches_per_task"] = self._builder.stats.most_batches
        if counted.prefill_computed or counted.prefix_cache_queries:  # generation: prefill and prefix cache
            report.extra["prefill"] = {
                "computed_tokens": counted.prefill_computed, "cached_tokens": counted.prefix_cache_hits,
                "prefix_cache_queried_tokens": counted.prefix_cache_queries,
                "prefix_cache_hit_rate": round(counted.prefix_cache_hits / counted.prefix_cache_queries, 4)
                if counted.prefix_cache_queries else 0.0}
        report.extra["length_estimate"] = {
            **self._estimate.describe(),
            "estimated": "task formation (bucketing, --max-batch-tokens) and the scheduling policy's "
                         "costs before a task ran use estimated tokens; the token, padding and truncation "
                         "figures and the timeline are exact (counted by the workers)"}
        report.failed_records = merger.failed
        report.extra["data_path"] = "records"
        self._determinism.fill(report)
        report.extra["scheduling"] = {**self._policy.stats, "cost_model": self._cost_summary()}
        report.batch_sizes = ([list(h) for h in self.tuner.history] if self.tuner
                              else [[0.0, self._builder.batch_size]])
        report.extra["errors_file"] = self._errors.path if self._errors.count or ckpt.resumed_failed else None
        out = report.to_dict()
        if self.config.report:
            write_report(out, self.config.report)
        return out

    def live(self, cursor: int) -> dict[str, Any]:
        """The run so far, for the live dashboard (``monitor.JobMonitor``; called from its
        thread, reads the driver's own counters, changes nothing): records done this run and
        failed, tokens counted, queue and backlog, per-worker totals, the timeline rows from
        index ``cursor`` on (at most ``dashboard.GANTT_KEEP``) and the next cursor, start-up
        phases, the tuner's and cost model's state. Raises RuntimeError when a dict changed
        size while read (the caller reads again)."""
        state, report, merger = self._state, self._report, self._merger
        timeline = report.timeline
        end = len(timeline)
        start = max(cursor, end - 2000)
        elapsed = time.perf_counter() - state.t_first_dispatch if state.t_first_dispatch else 0.0
        model_state = [["batch size now", self.tuner.current if self.tuner else self._builder.batch_size],
                       ["tuner", ("settled" if self.tuner.settled else "trying sizes") if self.tuner else "fixed size"],
                       ["policy", f"{self.config.policy} {dict(self._policy.stats)}"]]
        for w in range(self.num_workers):
            a, b = self._policy.cost.coefficients(w)
            model_state.append([f"cost w{w}", f"{a * 1e3:.2f} ms + {b * 1e6:.2f} ms per 1k padded tokens"])
        return {
            "phase": ("finishing" if state.source_done and not self._tasks else "running") if state.t_first_dispatch
            else "starting the workers",
            "unit": "task", "total": self._total, "resumed": self._ckpt.resumed_records,
            "done": merger.next_seq - self._ckpt.resumed_records, "failed": merger.failed,
            "tokens": state.counted.real, "elapsed_s": elapsed, "queue": self._policy.pending(),
            "backlog": merger.buffered, "in_flight": [self._executor.in_flight(w) for w in range(self.num_workers)],
            "ready": set(state.ready), "nodes": self._executor.describe().get("worker_nodes") or [],
            "per_worker": [[s.tasks, s.records, round(s.busy_s, 2), round(s.load_s, 2), s.restarts]
                           for s in report.per_worker],
            "restarts": sum(s.restarts for s in report.per_worker), "retries": report.retries,
            "timeline": timeline[start:end], "timeline_next": end,
            "startup": startup_so_far(self._t0, state.t_spawn, list(state.ready_phases), state.t_first_dispatch),
            "model_state": model_state,
            "batch_sizes": [list(h) for h in self.tuner.history] if self.tuner else [[0.0, self._builder.batch_size]],
            "errors": self._errors.count, "errors_path": self._errors.path if self._errors.count else None,
        }

    def _cost_summary(self) -> list[dict[str, float]]:
        """Fitted per-worker task cost: overhead (ms) and ms per 1,000 padded tokens."""
        out = []
        for w in range(self.num_workers):
            a, b = self._policy.cost.coefficients(w)
            out.append({"worker": w, "overhead_ms": round(a * 1e3, 3), "ms_per_1k_tokens": round(b * 1e6, 3)})
        return out

