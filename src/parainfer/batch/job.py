"""A batch job: its setup (``setup.JobSetup``), the output lock, and the driver that runs it.

``Job(config).run()`` sets the job up once (input checked, predictor built, sizes chosen),
locks the output, picks the data path (``mode.choose_mode``: record mode,
``record_mode.RecordDriver``, or sharded mode, ``shard_mode.ShardDriver``) and runs it.
Also the entry point for starting workers that outlive one job (``start_workers``, ``wait_ready``).
"""

from __future__ import annotations

from typing import Any

from parainfer.batch.mode import choose_mode
from parainfer.batch.monitor import JobMonitor, open_monitor
from parainfer.batch.record_mode import RecordDriver
from parainfer.batch.report import TimingReport, already_complete, close_run, print_summary, write_report  # noqa: F401 - re-exported
from parainfer.batch.setup import Driver, JobSetup, start_workers  # noqa: F401 - re-exported
from parainfer.batch.shard_mode import ShardDriver
from parainfer.config import JobConfig
from parainfer.executors.pool import Workers, wait_ready  # noqa: F401 - re-exported
from parainfer.io.guard import OutputLock
from parainfer.models.base import Predictor


class Job:
    """One batch-inference run.

    Args:
        config: the validated settings.
        predictor: a ready-made (unloaded) predictor; default: built from config.task/model.
        source: the records to read (default: ``open_source(config.input)``; in-memory jobs
            pass ``io.memory.memory_source``).
        store: the output side with the Checkpoint interface (default: ``Checkpoint`` on
            config.output; in-memory jobs pass ``io.memory.MemoryStore``).

    The constructor raises UsageError for bad input files or options (``JobSetup.build``);
    ``run()`` returns the report dict and raises JobError when the workers cannot run the model.
    ``encode_in_workers`` and ``task_group`` may be set before ``run`` (``JobSetup``'s).
    """

    def __init__(self, config: JobConfig, predictor: Predictor | None = None, source: Any = None,
                 store: Any = None):
        self.setup = JobSetup.build(config, predictor, source, store)
        self.encode_in_workers = self.setup.encode_in_workers
        self.task_group = self.setup.task_group

    @property
    def config(self) -> JobConfig:
        return self.setup.config

    @property
    def predictor(self) -> Predictor:
        return self.setup.predictor

    @property
    def num_workers(self) -> int:
        return self.setup.num_workers

    def run(self, workers: Workers | None = None) -> dict[str, Any]:
        """Run the job to the end; returns the report dict (also written to config.report).

        ``workers``: a started executor to run on and leave running (``start_workers``; its
        num_workers must equal this job's); default: start one now and shut it down at the end.
        The output is locked for the whole job (``io.guard.OutputLock``): a second job on the
        same output raises UsageError naming this one (an in-memory job has no output to lock).
        A large splittable input runs in sharded mode (``mode.choose_mode``, ``--shard-mode``).
        With ``config.dashboard`` a live dashboard (``monitor.JobMonitor``) serves the job while it
        runs and shows the report's totals at the end (UsageError when its address cannot be bound).
        """
        monitor = open_monitor(self.config.dashboard)
        try:
            if self.setup.store is not None:
                report = self._driver("records", monitor).run(workers)
            else:
                output = self.config.output
                with OutputLock(output.rstrip("/") or output):
                    report = self._driver(choose_mode(self.config), monitor).run(workers)
        except BaseException as e:
            if monitor is not None:
                monitor.finish(None, f"stopped: {type(e).__name__}")
            raise
        if monitor is not None:
            monitor.finish(report)
        return report

    def _driver(self, mode: str, monitor: JobMonitor | None = None) -> Driver:
        """The driver of ``mode`` ("records" or "sharded") on this job's setup, shown by ``monitor``."""
        setup = self.setup.with_options(encode_in_workers=self.encode_in_workers, task_group=self.task_group)
        driver = ShardDriver(setup) if mode == "sharded" else RecordDriver(setup)
        driver.monitor = monitor
        return driver
