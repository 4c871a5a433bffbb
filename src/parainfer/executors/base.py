"""Executor contract and the messages between the driver and its workers.

An executor starts N workers (each holds one model replica), sends each the tasks the
scheduling policy gives it, and reports back events: a worker became ready, a task finished,
a worker died (with the tasks it held). Times are ``time.perf_counter()`` seconds, which on
Linux is CLOCK_MONOTONIC and so comparable between processes of one machine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable

from parainfer.counts import TokenCounts

# Environment variable naming, comma-separated, the modules a local worker imports in a
# background thread once its model is loaded (``pool.start_workers``'s ``warm``).
WARM_ENV = "PARAINFER_WARM"


@dataclass(slots=True)
class WorkerReady:
    """A worker finished loading its model replica.

    Attributes:
        worker_id: which worker.
        load_s: seconds from the worker's code starting to the model being ready.
        info: the predictor's ``describe()`` as loaded (the resolved dtype).
        phases: where the start-up went, in seconds (``imports_s``, ``tokenizer_s``,
            ``weights_s``, ``dtype_check_s`` as the predictor measured them, in
            ``Predictor.load_phases``; ``load_other_s``: the rest of ``load_s``), plus ``started_at``: ``perf_counter()`` when the worker's
            code began, which the driver compares with when it spawned the worker. An executor
            whose workers run on other machines (clocks not comparable) leaves ``started_at`` out.
    """

    worker_id: int
    load_s: float
    info: dict[str, Any] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class TaskResult:
    """A finished task.

    Attributes:
        task_index: Task.index.
        worker_id: who ran it.
        outputs: one dict per record in task order, or None where that record failed.
        errors: (position in task, reason) for each failed record.
        t_received, t_start, t_end: when the worker took it off its queue, started and
            finished computing (perf_counter seconds).
        counts: the exact token counts the worker measured when it tokenised the task
            (``Predictor.token_counts``); None when it could not. The driver only estimated
            lengths, so an executor must pass this back for the report's token figures and the
            driver's length estimate (``length_estimate.LengthEstimator``) to be exact.
        encoded: for a task with ``Task.rows``: each record's output line, built and encoded
            by the worker (``executors.worker.encode_rows``), None where the record failed;
            ``outputs`` is then empty. None for a task without rows.
        unwritable: (position, the row's id, reason) of each record whose output row the
            format cannot hold (it goes to the errors file without its text, as the driver's
            sink would have sent it).
        renamed: input columns written as ``input_<name>`` in this task's rows.
    """

    task_index: int
    worker_id: int
    outputs: list[dict[str, Any] | None]
    errors: list[tuple[int, str]]
    t_received: float
    t_start: float
    t_end: float
    counts: TokenCounts | None = None
    encoded: list[bytes | None] | None = None
    unwritable: list[tuple[int, Any, str]] = field(default_factory=list)
    renamed: list[str] = field(default_factory=list)


@dataclass(slots=True)
class WorkerFailed:
    """A worker process died or failed to load; ``tasks`` are the tasks it held."""

    worker_id: int
    reason: str
    tasks: list[Task]
    fatal: bool = False  # True when the model failed to load: restarting will not help
    running: int | None = None  # Task.index it had started and not finished (None: none known)


@dataclass(slots=True)
class WorkerRetired:
    """A worker left the job without failing: its node is being drained (``ray drain-node``, a
    preemption notice, an autoscaler scaling in). It holds no task: the executor gave it no new
    one once the drain was seen (``in_flight`` reads as full meanwhile) and let it finish those it
    had, so nothing is requeued and nothing is blamed. The driver stops dispatching to it; a
    fresh worker may come back in the same slot later (a ``WorkerReady``) when a node has room.

    Attributes:
        worker_id: which worker. reason: one line, e.g. "node 10.0.0.2 is being drained".
    """

    worker_id: int
    reason: str


@dataclass(slots=True)
class WriteFailed:
    """A worker could not write a task's output (sharded mode: its part), a full disk, a file
    size limit or an I/O error: the storage's fault, not the records'. The worker lives on; the
    driver stops the job (``recovery.on_write_failed``), since a restart or a split would fail
    the same way.

    Attributes:
        task_index: the task's index. worker_id: who ran it.
        error: the OSError, naming the file (``errno``, ``strerror``, ``filename``).
    """

    task_index: int
    worker_id: int
    error: OSError


@dataclass(slots=True)
class ShardTask:
    """The second task kind (sharded mode, ``parainfer.batch.shard_mode``): a range of the input file that
    the worker reads, cuts into batches (``tasks.TaskBuilder``), runs and writes to its own
    output part, so the records never pass through the driver.

    Attributes:
        index: 0-based creation order of shard tasks within the job (its own numbering).
        shard: the range (``io.shards.plan.Shard``).
        input: how to read it (``io.shards.reader.ShardInput``).
        part, errors_part: where the worker writes the shard's output rows (in the output's
            format, ``io.shards.part_sinks``) and its failed records (errors-file JSONL); both are
            overwritten.
        batch: batching settings: ``batch_size``, ``max_batch_tokens``, ``bucket_window``,
            ``id_column``, ``text_column``, ``own_rows`` (``Predictor.writes_own_rows``); output:
            ``format``, ``header``, ``with_header`` (``io.shards.part_sinks.open_part``); and
            ``task_timeout`` (seconds one batch may run, or None), ``auto_max_batch`` (``--batch-size
            auto``: the largest size the worker's tuner tries, or None; ``batch.shard_runner``).
        attempt: how many times this shard was given out before.
        runner: the module-level function that runs it in the worker,
            ``runner(predictor, task, worker_id, t_received, run_task) -> ShardResult``, or
            ``WriteFailed`` when a part cannot be written (``run_task`` runs one batch);
            pickled by reference, so the driver's layer provides it and the executors never
            import it.
    """

    index: int
    shard: Any
    input: Any
    part: str
    errors_part: str
    batch: dict[str, Any]
    attempt: int = 0
    runner: Callable[..., ShardResult | WriteFailed] | None = None

    def __len__(self) -> int:  # recovery and policies count records; a shard counts as one unit
        return 1


@dataclass(slots=True)
class ShardResult:
    """A finished shard: its parts are written and fsynced.

    Attributes:
        task_index: ShardTask.index. worker_id: who ran it.
        records, failed: rows read from the shard, and how many of them went to the errors part.
        out_bytes, out_sha256, err_bytes, err_sha256: the parts' sizes and SHA-256 hex digests.
        t_received, t_start, t_end: perf_counter seconds, as in TaskResult.
        counts: exact token counts summed over the shard's batches. batches: how many batches ran.
        lines: lines in the shard (line ends; Parquet: rows), for numbering the next shard's.
        header: the output part's header (``io.shards.part_sinks``: CSV columns, Parquet schema bytes;
            None for JSONL or a part without rows).
        batch_size: the batch size the worker used last (``--batch-size auto`` tunes it).
    """

    task_index: int
    worker_id: int
    records: int
    failed: int
    out_bytes: int
    out_sha256: str
    err_bytes: int
    err_sha256: str
    t_received: float
    t_start: float
    t_end: float
    counts: TokenCounts
    batches: int = 0
    lines: int = 0
    header: Any = None
    batch_size: int = 0


Event = WorkerReady | TaskResult | ShardResult | WriteFailed | WorkerFailed | WorkerRetired


class Executor(ABC):
    """Starts, feeds and watches N workers. Implementations: ``local`` (processes), ``ray``
    (Ray core actors); create one by name with ``parainfer.executors.make_executor``."""

    num_workers: int  # worker slots (ids 0 .. num_workers - 1); an elastic executor fills them as room appears
    runs_shards: bool = False  # True when submit takes ShardTask (the workers see the input file)

    @abstractmethod
    def start(self, count: int | None = None) -> None:
        """Start workers 0 .. ``count - 1`` (default: all; non-blocking); WorkerReady events follow
        as each loads. The others can be started later with ``restart``."""

    @abstractmethod
    def submit(self, worker_id: int, task: Task | ShardTask) -> None:
        """Queue ``task`` on ``worker_id`` (non-blocking). A ``ShardTask`` is answered by a
        ``ShardResult``, or a ``WriteFailed`` when its parts cannot be written (an executor that
        cannot run shards raises NotImplementedError)."""

    @abstractmethod
    def poll(self, timeout: float) -> list[Event]:
        """Events since the last call; waits up to ``timeout`` seconds for the first one."""

    @abstractmethod
    def in_flight(self, worker_id: int) -> int:
        """Tasks submitted to ``worker_id`` and not yet finished."""

    @abstractmethod
    def shutdown(self) -> None:
        """Stop all workers and release their resources."""

    # -- recovery and reporting (the drivers' watchdog and restarts use these) ---------------
    def restart(self, worker_id: int) -> None:
        """Replace a dead or killed worker with a fresh one (its model is loaded again)."""
        raise NotImplementedError

    def kill(self, worker_id: int) -> None:
        """Kill a worker at once (a hung task); the next ``poll`` reports its death."""
        raise NotImplementedError

    def retire(self, worker_id: int) -> None:
        """Stop a worker that holds no task, for good (the server's autoscaler removing a drained
        replica); the next polls report its end as a ``WorkerFailed`` with no tasks, which the
        caller expects. ``restart`` starts the slot again later. Default: ``kill``."""
        self.kill(worker_id)

    def running(self, worker_id: int) -> tuple[int, float] | None:
        """(Task.index, perf_counter start on the driver's clock) of the task it runs, or None."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """For the report: ``{"name": ..., "nodes": [{"node", "workers"}], "worker_nodes": [...]}``
        (worker_nodes[w]: where worker w last ran)."""
        import socket

        host = socket.gethostname()
        return {"name": type(self).__name__.removesuffix("Executor").lower(),
                "nodes": [{"node": host, "workers": self.num_workers}], "worker_nodes": [host] * self.num_workers}


@dataclass(slots=True)
class Task:
    """A batch of records to run on one worker.

    Attributes:
        index: 0-based creation order within the job.
        seqs: input positions (Record.seq) of the B records, in batch order.
        texts: the B texts, aligned with ``seqs``.
        tokens: real tokens after truncation (sum over the batch); the cost estimate.
        padded_tokens: B x longest truncated length (what a padded batch computes).
        attempt: how many times this task was given out before (for retries).
        batch_size: the batch-size setting it was built with (it may hold fewer records).
        rows: set when the worker builds and encodes each record's output row itself
            (:class:`RowInfo`, record mode with a JSONL output); None: the driver does.
        batches: a task that groups several batches (``TaskBuilder.group``): the sizes of its
            batches, in order; the worker runs each as its own ``predict`` call, so the batches
            are the same as ungrouped tasks'. None: the task is one batch.
    """

    index: int
    seqs: list[int]
    texts: list[str]
    tokens: int
    padded_tokens: int
    attempt: int = 0
    batch_size: int = 0
    rows: "RowInfo | None" = None
    batches: list[int] | None = None

    def __len__(self) -> int:
        return len(self.seqs)


@dataclass(slots=True)
class RowInfo:
    """What a worker needs to build and encode the output rows of a task's records, so that the
    driver only writes the bytes in order (``merger.build_row``, ``io.sinks.encode_jsonl_row``).

    Attributes:
        ids, extras, lines: per record, aligned with ``Task.seqs``: its id, its other input
            columns, and its 1-based input line (for the errors file; the worker does not use it).
        full_texts: the untruncated texts when ``TaskBuilder.max_chars`` cut one of the task's
            texts (the output row holds the text as read), else None (``Task.texts`` are they).
        columns: (id column, text column, own rows: the model's result is the whole row).
    """

    ids: list[Any]
    extras: list[dict[str, Any]]
    lines: list[int]
    full_texts: list[Any] | None
    columns: tuple[str, str, bool]

    def sliced(self, lo: int, hi: int) -> "RowInfo":
        """The rows of records ``lo`` .. ``hi - 1`` (a bisected task's half)."""
        full = self.full_texts[lo:hi] if self.full_texts is not None else None
        return RowInfo(self.ids[lo:hi], self.extras[lo:hi], self.lines[lo:hi], full, self.columns)
