"""One job's setup, made once before either driver runs, and the driver contract.

``JobSetup.build`` resolves the input format, checks the executor, opens the source, guards
the output paths, builds the predictor and sizes the workers, batches and windows, in short
named steps: input problems are reported before any model is built or worker started. Both
drivers (``record_mode.RecordDriver``, ``shard_mode.ShardDriver``) are made from a setup and
implement ``Driver``; what a driver changes while it runs stays in the driver.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Protocol

from parainfer.batch import shard_runner
from parainfer.batch.report import is_run_report
from parainfer.config import JobConfig
from parainfer.executors import check_executor, default_threads
from parainfer.executors import pool
from parainfer.executors.base import WorkerReady
from parainfer.executors.pool import Workers
from parainfer.io.checkpoint import PARTS_SUFFIX, manifest_path
from parainfer.io.numerics import record, resume_numerics
from parainfer.io.guard import LOCK_SUFFIX, check_not_foreign, check_output_paths
from parainfer.io.safe_files import check_own_dir, check_regular_or_absent
from parainfer.io.shards.store import PARTS_SUFFIX as SHARDS_SUFFIX
from parainfer.io.shards.store import is_dir_output, store_paths
from parainfer.io.sinks import default_errors_path
from parainfer.io.sources import open_source
from parainfer.models.backend import decide as decide_backend
from parainfer.models.base import Predictor
from parainfer.models.registry import build_predictor
from parainfer.openai.batch_file import BATCH_TASK, open_batch_source, resolve_job_format
from parainfer.platform.devices import default_workers
from parainfer.scheduling.autobatch import BatchSizeTuner

# Task groups (``tasks.group_tasks``): up to TASK_GROUP batches a task, as long as a window
# still makes ``record_mode.WINDOW_TASKS_PER_SLOT`` tasks for each place in the workers' queues.
TASK_GROUP = 8
# ``--batch-size auto``: the fixed batch size (records a batch) of the whole job; the tuner sets
# how many such batches go in one task, never the batches (so the output bytes never depend on
# timing). The default ``--batch-size``.
AUTO_BATCH_SIZE = 64
# Modules a local worker imports in the background once its model is loaded, so that its first
# shard does not wait for them (the shard runner's readers, sinks, merger).
WARM_MODULES = (shard_runner.__name__,)


class Driver(Protocol):
    """A job's data path: record mode or sharded mode.

    ``run(workers)`` runs the job to the end on ``workers`` (a started executor, left running;
    None: start one and shut it down at the end) and returns the report dict; raises JobError
    when the workers cannot run the model, StorageError when the output cannot be written,
    ``recovery.Interrupted`` after a SIGINT/SIGTERM (what is committed stays).
    """

    def run(self, workers: Workers | None = None) -> dict[str, Any]: ...


@dataclass(frozen=True)
class JobSetup:
    """Everything both drivers need, fixed before the job runs.

    Attributes:
        config: the settings (an OpenAI batch file's already resolved to task openai-batch).
        predictor: the unloaded predictor (``max_batch_tokens`` set).
        source: the records to read. store: the output side (None: a ``Checkpoint`` on
            ``config.output``, made by the driver; in-memory jobs pass ``io.memory.MemoryStore``).
        num_workers: workers asked for (a driver runs fewer when the replicas do not fit).
        tuner: ``--batch-size auto``'s ``BatchSizeTuner``, else None.
        batch_size: the job's batch size: ``--batch-size``, or ``AUTO_BATCH_SIZE`` (at most
            ``--max-auto-batch-size``) for auto, whose tuner then sizes tasks, not batches.
        bucket: length bucketing on (``--bucket-window`` > 1). window: records read at once.
        max_buffered: most records the driver's reorder buffer holds.
        encode_in_workers: workers build and encode a JSONL output's rows (``executors.base.RowInfo``);
            False: the driver's merger and sink do.
        task_group: most batches joined per task while the input lasts (``tasks.group_tasks``).
    """

    config: JobConfig
    predictor: Predictor
    source: Any
    store: Any
    num_workers: int
    tuner: BatchSizeTuner | None
    batch_size: int
    bucket: bool
    window: int
    max_buffered: int
    encode_in_workers: bool = True
    task_group: int = TASK_GROUP

    @classmethod
    def build(cls, config: JobConfig, predictor: Predictor | None = None, source: Any = None,
              store: Any = None) -> JobSetup:
        """The setup of ``config``; ``predictor``, ``source``, ``store`` as ``Job`` takes them.

        Raises UsageError for a bad input file, output path or option, before any model is built."""
        config = resolve_job_format(config)  # an OpenAI batch file: task openai-batch
        check_executor(config.executor)
        source = source or open_job_source(config)
        if store is None:  # an in-memory job (the Python API) writes no file
            guard_output_paths(config)
        predictor = predictor or build_job_predictor(config)
        num_workers = worker_count(config, predictor)
        prepare_predictor(config, predictor, num_workers)
        tuner = auto_batch_tuner(config, num_workers)
        batch_size = min(AUTO_BATCH_SIZE, tuner.max_size) if tuner else int(config.batch_size)
        bucket = config.bucket_window > 1
        window = config.bucket_window if bucket else batch_size
        max_buffered = config.max_buffered_records or max(
            4 * window, 4 * num_workers * (config.prefetch + 1) * batch_size)
        return cls(config, predictor, source, store, num_workers, tuner, batch_size, bucket, window, max_buffered)

    def with_options(self, **changes: Any) -> JobSetup:
        """A copy with ``changes`` (e.g. ``encode_in_workers``, ``task_group``); self if none differ."""
        if all(getattr(self, k) == v for k, v in changes.items()):
            return self
        return dataclasses.replace(self, **changes)


def open_job_source(config: JobConfig) -> Any:
    """The job's records: an OpenAI batch file's requests, or ``io.sources.open_source``."""
    if config.task == BATCH_TASK:
        return open_batch_source(config.input)
    return open_source(config.input, text_column=config.text_column, id_column=config.id_column,
                       allow_messages=config.task == "generate")


def guard_output_paths(config: JobConfig) -> None:
    """UsageError when the output, report or errors file would overwrite the input or each
    other (``io.guard.check_output_paths``; a folder output, sharded parts, is not checked), or
    a file parainfer keeps next to the output is refused (``check_side_files``)."""
    folder = is_dir_output(config.output)  # a folder of parts (sharded mode; io.shards.store)
    out = config.output.rstrip("/") if folder else config.output
    errors = config.errors or default_errors_path(out)
    check_output_paths(config.input, {"output": None if folder else out, "report": config.report,
                                      "errors file": errors})
    check_side_files(config, out, folder, errors)


def check_side_files(config: JobConfig, out: str, folder: bool, errors: str) -> None:
    """Refuse (UsageError), before any model is built, a file parainfer writes next to the output
    that is a symbolic link or not a regular file (``io.safe_files``; the lock and the errors
    file, written in place, not a hard link either): the lock, the checkpoint, the Parquet parts
    and shards folders, the errors file and the report; and a non-empty ``--report`` that is not
    a run report (parainfer did not write it) unless ``--overwrite``. ``out``: the output path (a
    folder output without its "/"); ``folder``: the output is a folder of parts; ``errors``: the
    errors file. The errors file's ownership needs the checkpoint (``io.checkpoint.check_errors_file``)."""
    if out != "-":
        check_regular_or_absent(out + LOCK_SUFFIX, "lock file")
        check_regular_or_absent(store_paths(config.output)[0] if folder else manifest_path(out), "checkpoint",
                                one_name=False)
        if not folder:
            check_own_dir(out + SHARDS_SUFFIX, "shards folder")
            if out.lower().endswith(".parquet"):
                check_own_dir(out + PARTS_SUFFIX, "Parquet parts folder")
    check_regular_or_absent(errors, "errors file")
    if config.report and check_regular_or_absent(config.report, "report", one_name=False):
        check_not_foreign(config.report, is_run_report(config.report), config.overwrite, "report",
                          "it is not a parainfer run report")


def build_job_predictor(config: JobConfig) -> Predictor:
    """The predictor of ``config.task`` / ``config.model``: for an OpenAI batch file, the batch
    predictor over the registry's backends (``openai.batch_predictor``); else the registry's backend."""
    if config.task == BATCH_TASK:
        from parainfer.openai.batch_predictor import batch_file_predictor  # its protocol models: only for batch files

        return batch_file_predictor(config, build_predictor)
    return build_predictor(config.task, config.model, config.dtype, config.device, trust=config.trust,
                           backend=config.backend, **config.generation, **config.translation)


def prepare_predictor(config: JobConfig, predictor: Predictor, num_workers: int) -> None:
    """Settle what a predictor computes with before workers load it: the backend (``--backend
    auto`` decides once per model and machine, cached), ``max_batch_tokens`` and the
    deterministic widths, from ``config``. Jobs and warm pools (``batch.pools``) alike."""
    decide_backend(predictor, config.recalibrate, config.threads_per_worker or default_threads(num_workers))
    predictor.max_batch_tokens = config.max_batch_tokens  # workers hold it exactly
    predictor.deterministic = config.deterministic  # canonical widths (models.hf_common)


def worker_count(config: JobConfig, predictor: Predictor) -> int:
    """``--workers``, else the predictor's default, else one per core (per GPU with cuda)."""
    return config.workers or predictor.default_workers or default_workers(config.device, default_threads(1))


def auto_batch_tuner(config: JobConfig, num_workers: int) -> BatchSizeTuner | None:
    """``--batch-size auto``'s tuner (4 tasks per worker a trial; sizes in records a task,
    from the fixed batch size up), else None."""
    if config.batch_size != "auto":
        return None
    top = config.max_auto_batch_size
    base = min(AUTO_BATCH_SIZE, top)
    return BatchSizeTuner(start=base, max_size=max(top, base), tasks_per_trial=4 * num_workers)


def start_workers(predictor: Predictor, num_workers: int, threads_per_worker: int | None = None,
                  config: Any = None) -> Workers:
    """Start the workers of a job (``executors.pool.start_workers``, same arguments, returns and
    errors), each warming ``WARM_MODULES`` once its model is loaded."""
    return pool.start_workers(predictor, num_workers, threads_per_worker, config, warm=WARM_MODULES)


def on_worker_ready(event: WorkerReady, workers: Workers, report: Any, ready_phases: list[dict[str, float]]) -> None:
    """Both drivers' handling of a ``WorkerReady``: the worker joins ``workers.ready``; the model
    as loaded (its resolved dtype) goes to ``workers.model_info`` and the report; the worker's
    load time to ``report.per_worker``; its start-up phases (seconds, plus ``ready_at``, this
    process's ``perf_counter()`` now) to ``ready_phases`` for the first ``num_workers`` loads."""
    workers.ready.add(event.worker_id)
    workers.model_info = event.info
    report.per_worker[event.worker_id].load_s = event.load_s
    report.extra["model"] = event.info
    if "batch_invariance" in event.info:  # the model's numerics (models.hf_common.probe_batch_invariance)
        report.extra["batch_invariance"] = event.info["batch_invariance"]
    if len(ready_phases) < workers.num_workers:
        ready_phases.append({**event.phases, "ready_at": time.perf_counter()})


def pin_numerics(store: Any, predictor: Predictor, config: JobConfig) -> tuple[int | None, list[str]]:
    """Before a driver starts its workers: hold what the checkpoint ``store`` recorded
    (``io.numerics.resume_numerics``): a recorded dtype replaces ``--dtype auto`` on the
    predictor (decided once per job, not again on another machine). Returns (the threads per
    worker to start with, notes for ``report.Determinism``). Raises UsageError as
    ``resume_numerics`` does (exit 2)."""
    dtype, threads, notes = resume_numerics(getattr(store, "numerics", None), config.threads_per_worker,
                                            config.output)
    if dtype and config.dtype == "auto" and getattr(predictor, "dtype", None) == "auto":
        predictor.dtype = dtype  # type: ignore[attr-defined]
    return threads, notes


def record_numerics(store: Any, info: dict[str, Any] | None, threads: int | None, determinism: Any,
                    predictor: Predictor | None = None) -> None:
    """A worker is ready with the model as loaded (``info``: its resolved dtype): the first
    one's dtype and the thread count go to ``store.numerics`` (kept in the manifest), and the
    dtype replaces ``auto`` on ``predictor`` (a worker restarted later loads it, not deciding
    again); a worker that resolved another dtype than the job's makes the run not deterministic."""
    dtype = (info or {}).get("dtype")
    if getattr(store, "numerics", None) is None:
        store.numerics = record(dtype, threads)
        if dtype is not None and getattr(predictor, "dtype", None) == "auto":
            predictor.dtype = dtype  # type: ignore[union-attr]
    elif dtype is not None and store.numerics.get("dtype") not in (None, dtype):
        determinism.note(f"a worker computed in {dtype}, the job in {store.numerics['dtype']} (--dtype auto decided "
                         "differently on its machine; pass --dtype to pin it)")
