"""Sharded mode (``ShardDriver``): the driver hands out shards of the input file, never records.

The driver plans shards (``io.shards``), gives them out as ``ShardTask``s that the workers run
themselves (``batch.shard_runner``), commits the finished parts in shard order to the manifest
(``io.shards.store``), and recovers from worker deaths with ``recovery.RecoveryPolicy`` (shards
wrapped as ``ShardPiece``). Guarantees as record mode; not in this mode: stdout output
(``mode.choose_mode``). How and why: docs/sharded.md, "The driver and the shard runner (code)",
"Shard sizes" and "Guarantees".
"""

from __future__ import annotations

import collections
import contextlib
import os
import time
from dataclasses import dataclass
from typing import Any

from parainfer.errors import StorageError, storage_message
from parainfer.executors.base import ShardResult, ShardTask, WorkerFailed, WorkerReady, WorkerRetired, WriteFailed
from parainfer.executors.pool import Workers
from parainfer.batch.setup import JobSetup, on_worker_ready, pin_numerics, record_numerics, start_workers
from parainfer.batch.shard_runner import run_shard, timeout_note
from parainfer.io.shards.reader import ShardInput, shard_records
from parainfer.io.shards.store import ShardStore, remove_quietly
from parainfer.io.shards.plan import Shard, ShardPlanner, data_start, shard_lines, split_at_window, split_shard
from parainfer.io.safe_files import open_file
from parainfer.io.sinks import ErrorSink
from parainfer.batch.recovery import (GracefulStop, Interrupted, RecoveryPolicy, Triage, on_worker_failed,
                                      on_write_failed)
from parainfer.batch.report import Determinism, TimingReport, already_complete, close_run, startup_so_far, write_report
from parainfer.counts import TokenCounts

MIN_SHARD_BYTES, MAX_SHARD_BYTES = 16 << 10, 256 << 20  # factoring makes the count logarithmic in the size
MIN_SHARD_ROWS, MAX_SHARD_ROWS = 200, 2_000_000
PREFETCH = 1  # shards queued on a worker behind the one it runs


@dataclass(eq=False)
class ShardPiece:
    """A shard as recovery sees it (``recovery.Splittable``): bisected at a window boundary
    (``io.shards.plan.split_at_window``: the batches stay the plan's) while it holds several
    windows, else at a record end (``split_shard``; ``rebatched`` then True: its records run in
    other batches than planned), or None for a single record. ``index``: its ShardTask's (-1
    for a half not given out yet); ``attempt``: deaths of workers running it alone; ``reason``:
    why its last worker died; ``window``: the job's window size (input positions)."""

    shard: Shard
    path: str
    index: int = -1
    attempt: int = 0
    reason: str = ""
    window: int = 1
    rebatched: bool = False

    def __len__(self) -> int:  # a shard counts as one unit, as ShardTask does
        return 1

    def split(self) -> list[ShardPiece] | None:
        halves = split_at_window(self.path, self.shard, self.window)
        if halves is not None:
            return [ShardPiece(half, self.path, window=self.window) for half in halves]
        self.rebatched = True
        halves = split_shard(self.path, self.shard)
        return None if halves is None else [ShardPiece(half, self.path, window=self.window) for half in halves]


class ShardDriver:
    """Runs a job in sharded mode (``setup.Driver``; ``Job.run`` picks it when
    ``mode.choose_mode`` says so).

    Args:
        setup: the job's ``JobSetup``.

    ``run(workers)`` returns the report dict; raises JobError when the workers cannot run the
    model, StorageError at the first part, manifest or output write that fails (a worker's
    ``WriteFailed`` or the driver's own; the committed shards stay), Interrupted after a
    SIGINT/SIGTERM (the committed shards stay).
    """

    def __init__(self, setup: JobSetup):
        self.setup, self.config = setup, setup.config
        cfg, tuner = self.config, setup.tuner
        self.parquet = cfg.input.lower().endswith(".parquet")
        ext = os.path.splitext(cfg.input)[1].lower()
        self.input = ShardInput(cfg.input, cfg.text_column, cfg.id_column,
                                allow_messages=cfg.task == "generate" and ext in (".jsonl", ".ndjson", ".parquet"))
        self.batch = dict(batch_size=setup.batch_size, window=setup.window, max_batch_tokens=cfg.max_batch_tokens, bucket_window=cfg.bucket_window,
                          id_column=cfg.id_column, text_column=cfg.text_column,
                          own_rows=setup.predictor.writes_own_rows, task_timeout=cfg.task_timeout,
                          auto_max_batch=tuner.max_size if tuner else None)
        self.recovery = RecoveryPolicy(cfg.max_retries)
        self.monitor: Any = None  # a ``monitor.JobMonitor`` that shows this run (``--dashboard``), or None

    def _planner(self, store: ShardStore, workers: int) -> ShardPlanner:
        """The lazy plan of the uncommitted rest of the input. The smallest shard is
        MIN_SHARD_BYTES (Parquet: MIN_SHARD_ROWS), or ``PARAINFER_MIN_SHARD_BYTES`` / ``_ROWS``
        from the environment (tests and benchmarks use small ones), until measurements raise it."""
        env = os.environ
        lo, hi = ((int(env.get("PARAINFER_MIN_SHARD_ROWS", MIN_SHARD_ROWS)), MAX_SHARD_ROWS) if self.parquet else
                  (int(env.get("PARAINFER_MIN_SHARD_BYTES", MIN_SHARD_BYTES)), MAX_SHARD_BYTES))
        return ShardPlanner(self.config.input, store.next_start, store.next_line, workers, lo, max(lo, hi),
                            window=self.setup.window)

    def run(self, workers: Workers | None = None) -> dict[str, Any]:
        """Run the job to the end on ``workers`` (None: start them here and shut them down at
        the end); returns the report dict (also written to config.report)."""
        cfg, setup = self.config, self.setup
        t0 = time.perf_counter()
        store = ShardStore(cfg, setup.source, setup.predictor, (0, 1) if self.parquet else data_start(cfg.input))
        if store.finished:  # a finished output folder, its parts verified
            return self._already_complete(store, t0)
        self.batch.update(format=store.format, header=store.header, with_header=store.keep_parts)
        t_spawn = time.perf_counter()
        own = workers is None
        threads, self._numerics_notes = pin_numerics(store, setup.predictor, cfg)
        if own:
            workers = start_workers(setup.predictor, setup.num_workers, threads, cfg)
        n = workers.num_workers
        cpu0 = time.process_time()  # the driver's own work from here on (as record mode counts it)
        self._begin(store, workers)
        ready_phases: list[dict[str, float]] = []
        self._live_clock = (t0, t_spawn, ready_phases)
        if self.monitor is not None:
            self.monitor.watch(self)
        stop = GracefulStop(on_abort=lambda: [self.executor.kill(w) for w in range(n)])
        finished = False
        try:
            finished = self._loop(workers, stop, ready_phases)
        except OSError as e:  # a full disk, a file size limit: what is committed stays valid
            for w in range(n):  # first, so that no worker writes a part after the in-flight ones are removed
                self.executor.kill(w)
            alive = getattr(self.executor, "alive", None)  # local processes: wait (2 s at most) for them to end
            deadline = time.monotonic() + 2.0
            while alive is not None and any(alive(w) for w in range(n)) and time.monotonic() < deadline:
                time.sleep(0.01)
            raise self._storage_error(e) from None
        finally:
            self.planner.close()
            if not finished:
                for w in range(n):
                    self.executor.kill(w)
                workers.broken = True
            if own:
                workers.shutdown()
        if not finished:
            raise Interrupted(store.records_done, store.path)
        busy = time.process_time() - cpu0
        return self._finish(t0, t_spawn, ready_phases, busy)

    def _begin(self, store: ShardStore, workers: Workers) -> None:
        """This run's state on ``workers``; the first round of shards (its sizes need no
        measurement) is cut while the workers start."""
        n = workers.num_workers
        self.store, self.executor, self.workers = store, workers.executor, workers
        self.report = TimingReport(workers=n, policy="factoring")
        self.determinism = Determinism.from_dict(store.determinism)
        store.determinism_state = self.determinism.to_dict
        for note in self._numerics_notes:
            self.determinism.note(note)
        self.planner = self._planner(store, n)
        self.pending = collections.deque(x for x in (self.planner.next() for _ in range(n)) if x is not None)
        self.idle: set[int] = set()  # ready workers with no shard in flight (served first)
        self.room: set[int] = set()  # ready workers with at most PREFETCH shards in flight
        for w in workers.ready:
            self._file(w)
        self.cpu = {"dispatch": 0.0, "complete": 0.0, "idle": 0.0}  # driver CPU by kind of loop work
        self.units_done, self.unit_busy = 0, 0.0  # units (bytes, rows) of finished shards and their worker seconds
        self.running: dict[int, tuple[ShardTask, int]] = {}  # index -> (task, deaths)
        self.done: dict[int, tuple[ShardTask, ShardResult]] = {}  # shard start -> finished, not committed
        self.deaths: dict[int, int] = {}  # shard start -> deaths of workers running it
        self.counts, self.next_index = TokenCounts(), 0
        self.sizes: list[list[float]] = []  # [s since the first dispatch, batch size] as workers report them
        self.saved_at, self.saved = time.monotonic(), len(store.committed)  # last manifest write
        self.t_first = self.t_last = None

    def _loop(self, workers: Workers, stop: GracefulStop, ready_phases: list[dict[str, float]]) -> bool:
        """Hand out, take back and commit shards until all are committed (returns True, the
        output finished) or a stop request ends it (False, what is committed saved)."""
        with stop:
            for event in workers.take_pending():
                self._handle(event, ready_phases)
            while self.pending or self.running or not self.planner.done:
                if not stop.requested:
                    self._dispatch()
                elif not self.running or time.perf_counter() > stop.deadline:
                    break
                self._wait(stop.requested, ready_phases)
            self._commit(force=True)
            if stop.requested:
                return False
            t, cpu = time.perf_counter(), time.process_time()
            self.store.finish()
            self.report.t_write_s += time.perf_counter() - t
            self.report.extra["driver_finish_cpu_s"] = time.process_time() - cpu
            return True

    # -- the loop --------------------------------------------------------------------------

    def _wait(self, stopping: bool, ready_phases: list[dict[str, float]]) -> None:
        """Sleep until a worker reports (or the next manifest write is due; 0.25 s while
        stopping, for the grace deadline), then take in what came and commit. The CPU of a
        wake-up with news counts as taking shards back, of one without as idle."""
        unsaved = len(self.store.committed) > self.saved  # commits waiting for the next manifest write
        due = self.saved_at + self.config.checkpoint_every_s - time.monotonic() if unsaved else 1.0
        c = time.process_time()  # blocked in poll costs no CPU; receiving and unpickling does
        events = self.executor.poll(timeout=0.25 if stopping else min(1.0, max(0.01, due)))
        for event in events:
            self._handle(event, ready_phases)
        self._commit()
        self.cpu["complete" if events else "idle"] += time.process_time() - c

    def _dispatch(self) -> None:
        """Hand each worker with room its next shard (retried halves first, then the plan's
        next), idle workers first."""
        c = time.process_time()
        while self.idle or self.room:
            shard = self.pending.popleft() if self.pending else self.planner.next()
            if shard is None:
                break
            w = self.idle.pop() if self.idle else self.room.pop()
            deaths = self.deaths.get(shard.start, 0)
            part, errors_part = self.store.part_paths(shard, self.next_index)
            task = ShardTask(self.next_index, shard, self.input, part, errors_part, self.batch, attempt=deaths,
                             runner=run_shard)
            self.next_index += 1
            self.running[task.index] = (task, deaths)
            if self.t_first is None:
                self.t_first = time.perf_counter()
            self.executor.submit(w, task)
            self._file(w)
        self.cpu["dispatch"] += time.process_time() - c

    def _file(self, w: int) -> None:
        """Put worker ``w`` in ``idle``, ``room`` or neither by its shards in flight."""
        self.idle.discard(w)
        self.room.discard(w)
        if w in self.workers.ready:
            held = self.executor.in_flight(w)
            if held == 0:
                self.idle.add(w)
            elif held <= PREFETCH:
                self.room.add(w)

    def _observe(self) -> None:
        """Give the plan the driver's CPU per shard (handing out, per shard handed out; taking
        back, per shard finished) and the workers' seconds per unit."""
        finished = len(self.report.timeline)
        if finished and self.next_index:
            driver_s = self.cpu["dispatch"] / self.next_index + self.cpu["complete"] / finished
            self.planner.observe(driver_s, self.unit_busy / max(1, self.units_done))

    def _handle(self, event: Any, ready_phases: list[dict[str, float]]) -> None:
        if isinstance(event, WorkerReady):
            on_worker_ready(event, self.workers, self.report, ready_phases)
            record_numerics(self.store, event.info, self.executor.threads, self.determinism, self.setup.predictor)
            self._file(event.worker_id)
        elif isinstance(event, WorkerRetired):  # an elastic executor's worker left; it held no shard
            self.workers.ready.discard(event.worker_id)
            self.idle.discard(event.worker_id)
            self.room.discard(event.worker_id)
        elif isinstance(event, ShardResult):
            self._file(event.worker_id)
            entry = self.running.pop(event.task_index, None)
            if entry is None:
                return
            task = entry[0]
            self.done[task.shard.start] = (task, event)
            self._account(task, event)
            self.units_done += task.shard.end - task.shard.start
            self.unit_busy += event.t_end - event.t_start
            self._observe()
        elif isinstance(event, WriteFailed):
            on_write_failed(event)
        elif isinstance(event, WorkerFailed):
            self._forget(event)

    def _account(self, task: ShardTask, res: ShardResult) -> None:
        self.t_last = time.perf_counter()
        stats = self.report.per_worker[res.worker_id]
        busy = res.t_end - res.t_start
        stats.busy_s += busy
        stats.tasks += 1
        stats.records += res.records
        self.counts.add(res.counts)
        self.report.records += res.records
        self.report.failed_records += res.failed
        self.report.tasks += res.batches
        origin = self.t_first or 0.0
        if res.batch_size and (not self.sizes or self.sizes[-1][1] != res.batch_size):
            self.sizes.append([round(self.t_last - (self.t_first or self.t_last), 3), res.batch_size])
        self.report.timeline.append([task.index, res.worker_id, round(res.t_start - origin, 6),
                                     round(res.t_end - origin, 6), res.records, res.counts.real, res.counts.padded,
                                     task.attempt, res.failed])

    def live(self, cursor: int) -> dict[str, Any]:
        """The run so far, for the live dashboard (as ``record_mode.RecordDriver.live``; the
        Gantt bars are shards; records count when their shard finished; the total is unknown
        until the end, the errors are in the shards' parts). Called from the dashboard's thread."""
        report, (t0, t_spawn, ready_phases) = self.report, self._live_clock
        timeline = report.timeline
        end = len(timeline)
        n = self.workers.num_workers
        return {
            "phase": "running" if self.t_first else "starting the workers", "unit": "shard", "total": None,
            "resumed": 0, "done": report.records, "failed": report.failed_records, "tokens": self.counts.real,
            "elapsed_s": time.perf_counter() - self.t_first if self.t_first else 0.0,
            "queue": len(self.pending), "backlog": len(self.done), "in_flight": [self.executor.in_flight(w) for w in range(n)],
            "ready": set(self.workers.ready), "nodes": self.executor.describe().get("worker_nodes") or [],
            "per_worker": [[s.tasks, s.records, round(s.busy_s, 2), round(s.load_s, 2), s.restarts]
                           for s in report.per_worker],
            "restarts": sum(s.restarts for s in report.per_worker), "retries": report.retries,
            "timeline": timeline[max(cursor, end - 2000):end], "timeline_next": end,
            "startup": startup_so_far(t0, t_spawn, list(ready_phases), self.t_first),
            "model_state": [["shards planned", self.planner.planned], ["shards committed", len(self.store.committed)],
                            ["smallest shard (floor)", self.planner.plan.floor]],
            "batch_sizes": [list(h) for h in self.sizes], "errors": 0, "errors_path": None,
        }

    def _forget(self, event: WorkerFailed) -> None:
        """A worker failed: it is neither idle nor has room; then ``recovery.on_worker_failed``."""
        self.idle.discard(event.worker_id)
        self.room.discard(event.worker_id)
        on_worker_failed(event, self.workers, self.report, self._recover)

    def _recover(self, event: WorkerFailed) -> None:
        """The shards a restarted worker held, through ``recovery.RecoveryPolicy``: their partial
        parts are removed; the untouched ones go first in the queue, whole; the suspect is
        retried (``_retry``)."""
        held = []
        for task in event.tasks:
            if self.running.pop(task.index, None) is None:
                continue
            reason = _read_note(timeout_note(task.part)) or event.reason
            remove_quietly(task.part)
            remove_quietly(task.errors_part)
            held.append(ShardPiece(task.shard, self.config.input, task.index,
                                   self.deaths.get(task.shard.start, 0), reason, self.setup.window))
        triage = self.recovery.plan(held, event.running)
        for piece in held:
            if piece not in triage.untouched:
                self._retry(piece, triage)
        self.pending.extendleft(reversed([piece.shard for piece in triage.untouched]))

    def _retry(self, piece: ShardPiece, triage: Triage) -> None:
        """A suspect shard as the policy decided: its halves first in the queue, or the shard
        again (its death counted), or, a single record out of retries, failed alone."""
        self.report.retries += 1
        halves = next((h for suspect, h in triage.split if suspect is piece), None)
        if halves is not None:
            self.report.extra["bisected_shards"] = self.report.extra.get("bisected_shards", 0) + 1
            if piece.rebatched:  # cut inside a window: its records run in other batches than planned
                for item in shard_records(self.input, piece.shard):
                    self.determinism.rebatch(item.line, getattr(item, "id", None))
            for half in halves:
                self.deaths[half.shard.start] = 0
            self.pending.extendleft(reversed([half.shard for half in halves]))
        elif piece in triage.failed:
            deaths = self.deaths[piece.shard.start] = piece.attempt + 1
            self._fail_alone(piece.shard, f"worker died running this record {deaths} times "
                                          f"(last: {piece.reason.strip()})")
        else:
            self.deaths[piece.shard.start] = piece.attempt
            self.pending.appendleft(piece.shard)

    def _fail_alone(self, shard: Shard, reason: str) -> None:
        """Write a single-record shard's errors part by hand (its worker keeps dying on it)."""
        from parainfer.records import RecordError

        part, errors_part = self.store.part_paths(shard, self.next_index)
        self.next_index += 1
        open_file(part, "wb", "shard part").close()
        items = list(shard_records(self.input, shard))
        errs = ErrorSink(errors_part)
        errs.write([RecordError(i, getattr(r, "line", shard.first_line), getattr(r, "id", None), reason,
                                text=getattr(r, "text", None)) for i, r in enumerate(items)])
        errs.flush()
        size = errs.offset
        errs.close()
        from parainfer.io import digest

        task = ShardTask(-1, shard, self.input, part, errors_part, self.batch)
        res = ShardResult(-1, 0, len(items), len(items), 0, digest.new().hexdigest(), size, errs.digest.hexdigest(),
                          0.0, 0.0, 0.0, TokenCounts(), lines=shard_lines(self.config.input, shard))
        self.done[shard.start] = (task, res)
        self.report.records += len(items)
        self.report.failed_records += len(items)

    def _commit(self, force: bool = False) -> None:
        """Commit the finished shards that continue the committed prefix; write the manifest
        when ``--checkpoint-every`` seconds have passed since the last write (or ``force``)."""
        store = self.store
        while store.next_start in self.done:
            task, res = self.done.pop(store.next_start)
            if not store.fits(res):
                self._redo(task, res)
                break
            store.commit(task.shard, task.part, task.errors_part, res)
            self.batch["header"] = store.header
        now = time.monotonic()
        if (force or now - self.saved_at >= self.config.checkpoint_every_s) and len(store.committed) > self.saved:
            store.save()
            self.saved_at, self.saved = now, len(store.committed)

    def _redo(self, task: ShardTask, res: ShardResult) -> None:
        """A part written under another CSV header / Parquet schema than the job's (its worker
        started before the first part set it): run the shard again with the job's, first."""
        self.report.records -= res.records  # counted again when the redone shard finishes
        self.report.failed_records -= res.failed
        remove_quietly(task.part)
        remove_quietly(task.errors_part)
        self.report.extra["redone_shards"] = self.report.extra.get("redone_shards", 0) + 1
        self.pending.appendleft(task.shard)

    def _storage_error(self, error: OSError) -> StorageError:
        """The job's one line for a failed write (``errors.storage_message``, as record mode's):
        the finished shards that continue the committed prefix are committed first if the
        manifest can still be written, the parts of the shards in flight are removed (their
        space freed once the run's workers are stopped); the count is the manifest's on disk."""
        with contextlib.suppress(OSError):
            self._commit(force=True)
        for task, _ in [*self.running.values(), *self.done.values()]:  # in flight, or finished out of order
            remove_quietly(task.part)
            remove_quietly(task.errors_part)
        store = self.store
        return StorageError(storage_message(error, self.config.output, store.saved_records, store.path))

    def _already_complete(self, store: ShardStore, t0: float) -> dict[str, Any]:
        """The report of a rerun on a finished output folder (as record mode's "already complete")."""
        return already_complete(TimingReport(workers=self.setup.num_workers, policy="factoring"), t0, self.config.report,
                                resumed_records=store.records_done, data_path="sharded",
                                resumed_failed_records=store.failed, checkpoint=store.path,
                                errors_file=store.errors_path if store.failed else None)

    def _finish(self, t0: float, t_spawn: float, ready_phases: list[dict[str, float]], busy: float) -> dict[str, Any]:
        report, store = self.report, self.store
        close_run(report, t0=t0, t_spawn=t_spawn, ready_phases=ready_phases, t_first=self.t_first,
                  t_last=self.t_last, counts=self.counts, busy=busy, predictor=self.setup.predictor,
                  executor=self.executor, resumed=store.resumed_records, resumed_failed=store.resumed_failed,
                  checkpoint=store.path)
        report.extra["data_path"] = "sharded"
        self.determinism.fill(report)
        report.extra["shards"] = {"planned": self.planner.planned, "window": self.setup.window, "run": len(report.timeline),
                                  "committed": len(store.committed), "smallest_target": self.planner.plan.floor,
                                  "sizing": "factoring (Hummel et al. 1992), floor from the driver's cost per shard"}
        runs = max(1, len(report.timeline))
        report.extra["driver_shard_us"] = {"dispatch": round(self.cpu["dispatch"] / max(1, self.next_index) * 1e6, 2),
                                           "complete": round(self.cpu["complete"] / runs * 1e6, 2),
                                           "idle_s": round(self.cpu["idle"], 4)}
        report.extra["driver_busy_s"] = busy
        report.extra["driver_finish_s"] = round(report.t_write_s, 4)  # wall time of the concatenation
        # The shard bookkeeping alone: the driver's CPU less the final concatenation (output bytes
        # copied into one file, in the kernel).
        book = busy - report.extra.get("driver_finish_cpu_s", 0.0)
        report.extra["driver_bookkeeping_us_per_record"] = round(book / report.records * 1e6, 3) if report.records else None
        report.extra["errors_file"] = store.errors_path if store.failed else None
        fixed = [[0.0, self.batch["batch_size"]]]
        report.batch_sizes = (self.sizes or fixed) if self.batch["auto_max_batch"] else fixed
        report.extra["output_format"] = store.format + (" parts in a folder" if store.keep_parts else "")
        out = report.to_dict()
        if self.config.report:
            write_report(out, self.config.report)
        return out


def _read_note(path: str) -> str | None:
    """The text of a worker's timeout note (``shard_runner.BatchWatchdog``), or None."""
    try:
        with open_file(path, "r", "timeout note") as f:
            text = f.read().strip()
    except (OSError, ValueError):  # ValueError: a UsageError for a link put there (not followed)
        return None
    remove_quietly(path)
    return text or None
