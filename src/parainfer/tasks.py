"""Records -> tasks: batching under a size and token budget, with length bucketing.

A task is the unit of scheduling: a batch of records (their input positions and texts) with
its estimated cost in tokens. Records' ids and other columns stay in the driver (the merger
holds them); only texts travel to workers.

Lengths here are the driver's *estimates* (``length_estimate.LengthEstimator``: characters x
a tokens-per-character ratio learned from the workers' exact counts): the driver never
tokenises. Workers tokenise, and send the exact counts back with each result
(:class:`TokenCounts`); the engine reports those. A text longer than ``max_chars`` is cut to
``max_chars`` characters here, before any tokenising (issue 9: the size of one record is bounded).

Length bucketing: within a window of W records, records are sorted by token length before
batching, so each batch holds texts of similar length and little padding; the window's
batches are then queued in a fixed pseudo-random order (seeded by the window's first task
index, so runs are reproducible). Padded tokens of a
batch = batch size x its longest (truncated) text, as a padded encoder batch computes it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from parainfer.records import Record


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


def batch_sizes_split(sizes: list[int] | None, mid: int) -> tuple[list[int] | None, list[int] | None]:
    """The batch sizes of the records before ``mid`` and from ``mid`` on (a batch that ``mid``
    cuts is cut in two); None stays None (one batch each)."""
    if sizes is None:
        return None, None
    first: list[int] = []
    second: list[int] = []
    start = 0
    for n in sizes:
        if start + n <= mid:
            first.append(n)
        elif start >= mid:
            second.append(n)
        else:
            first.append(mid - start)
            second.append(start + n - mid)
        start += n
    return first, second


def group_tasks(tasks: list[Task], group: int, first_index: int) -> list[Task]:
    """Join each run of ``group`` consecutive tasks into one task of several batches
    (``Task.batches``): one message to a worker and one result back for all of them. The
    tasks are numbered again from ``first_index``; tokens add up."""
    if group <= 1 or len(tasks) <= 1:
        return tasks
    out = []
    for i in range(0, len(tasks), group):
        members = tasks[i:i + group]
        if len(members) == 1:
            out.append(members[0])
            continue
        rows = None
        if members[0].rows is not None:
            infos = [t.rows for t in members]
            full = None
            if any(r.full_texts is not None for r in infos):
                full = [x for r, t in zip(infos, members) for x in (r.full_texts if r.full_texts is not None else t.texts)]
            rows = RowInfo([x for r in infos for x in r.ids], [x for r in infos for x in r.extras],
                           [x for r in infos for x in r.lines], full, infos[0].columns)
        out.append(Task(index=members[0].index, seqs=[x for t in members for x in t.seqs],
                        texts=[x for t in members for x in t.texts], tokens=sum(t.tokens for t in members),
                        padded_tokens=sum(t.padded_tokens for t in members), batch_size=members[0].batch_size,
                        rows=rows, batches=[len(t) for t in members]))
    for i, task in enumerate(out):
        task.index = first_index + i
    return out


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


@dataclass(slots=True)
class TokenCounts:
    """Exact token counts of one task, measured by the worker that tokenised it.

    Attributes:
        real: tokens after truncation, summed over the task's records.
        padded: padded tokens the worker computed: B x the longest truncated record for one
            padded batch, or rows x longest summed over the forward passes of a predictor that
            cuts a task into length groups (``hf_common``).
        truncated: records longer than the model window (cut to it).
        fit_records, fit_chars, fit_tokens: over the records that were *not* truncated, their
            number, characters and tokens: what the driver's length estimate learns from.
        prefill_computed, prefix_cache_queries, prefix_cache_hits: generation only: prompt
            tokens the engine computed at prefill, looked up in its prefix cache, and found there
            (their prefill skipped).
    """

    real: int = 0
    padded: int = 0
    truncated: int = 0
    fit_records: int = 0
    fit_chars: int = 0
    fit_tokens: int = 0
    prefill_computed: int = 0
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0

    @classmethod
    def from_lengths(cls, texts: Sequence[Any], lengths: Sequence[int], truncated: Sequence[bool]) -> "TokenCounts":
        """Counts from per-record truncated lengths (tokens) and truncation flags, aligned with texts."""
        from parainfer.length_estimate import text_chars

        fit = [i for i, cut in enumerate(truncated) if not cut]
        return cls(real=sum(lengths), padded=max(lengths, default=0) * len(lengths), truncated=len(texts) - len(fit),
                   fit_records=len(fit), fit_chars=sum(text_chars(texts[i]) for i in fit),
                   fit_tokens=sum(lengths[i] for i in fit))


    def add(self, other: "TokenCounts") -> None:
        """Add every count of ``other`` to these (a running total over tasks)."""
        for name in ("real", "padded", "truncated", "fit_records", "fit_chars", "fit_tokens",
                     "prefill_computed", "prefix_cache_queries", "prefix_cache_hits"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class TaskStats:
    """Running totals over all tasks built (for the report)."""

    tasks: int = 0  # tasks scheduled (a task of several batches counts once)
    batches: int = 0  # batches built (predict calls planned)
    most_batches: int = 1  # most batches joined in one task
    records: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    truncated_records: int = 0

    @property
    def padding_efficiency(self) -> float:
        """Real tokens / padded tokens (1.0 = no padding)."""
        return self.real_tokens / self.padded_tokens if self.padded_tokens else 1.0


class TaskBuilder:
    """Cuts windows of records into tasks.

    Args:
        length_fn: texts -> token counts (the predictor's ``token_lengths``).
        max_input_tokens: the model window; longer texts count as truncated (None: no window).
        batch_size: most records per task (>= 1).
        max_batch_tokens: most padded tokens per task (B x longest); a single record longer
            than the budget still forms a task of its own. None: no token budget.
        bucket: sort each window by token length before batching (length bucketing).
        max_chars: texts longer than this many characters are cut to it before they go into a
            task (None: never cut); see ``Predictor.max_input_chars``.
        group: join up to this many consecutive batches of a window into one task
            (``group_tasks``; 1, the default: one batch a task), as long as the window still
            makes ``min_tasks`` tasks (attribute; default 1).
        row_columns: (id column, text column, own rows): each task carries its records' ids and
            other columns (:class:`RowInfo`) so that the worker encodes the output rows; None
            (default): tasks carry texts only.
    """

    def __init__(self, length_fn: Callable[[list[str]], list[int]], max_input_tokens: int | None,
                 batch_size: int = 64, max_batch_tokens: int | None = None, bucket: bool = True,
                 max_chars: int | None = None, row_columns: tuple[str, str, bool] | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be >= 1, got {max_batch_tokens}")
        self.length_fn = length_fn
        self.max_input_tokens = max_input_tokens
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.bucket = bucket
        self.max_chars = max_chars
        self.row_columns = row_columns
        self.group = 1
        self.min_tasks = 1
        self.stats = TaskStats()

    def build(self, window: Sequence[Record]) -> list[Task]:
        """Turn one window of records into tasks (in the order they should be queued)."""
        if not window:
            return []
        lengths = self.length_fn([r.text for r in window])
        cap = self.max_input_tokens
        if cap is not None:
            self.stats.truncated_records += sum(1 for n in lengths if n > cap)
            lengths = [min(n, cap) for n in lengths]
        order = sorted(range(len(window)), key=lengths.__getitem__) if self.bucket else range(len(window))
        tasks: list[Task] = []
        batch: list[int] = []
        longest = 0
        for i in order:
            n = lengths[i]
            grown = max(longest, n)
            if batch and (len(batch) >= self.batch_size or
                          (self.max_batch_tokens is not None and grown * (len(batch) + 1) > self.max_batch_tokens)):
                tasks.append(self._make(window, lengths, batch, longest))
                batch, grown = [], n
            batch.append(i)
            longest = grown
        tasks.append(self._make(window, lengths, batch, longest))
        if self.bucket:
            # Sorted batches run shortest first; a fixed shuffle of their order gives every
            # stretch of the job a representative mix of lengths (for feedback measurements and
            # for the static round robin), at no cost to ordering: the merger restores it.
            random.Random(tasks[0].index).shuffle(tasks)
        group = min(self.group, len(tasks) // max(1, self.min_tasks))
        if group > 1:
            first = self.stats.tasks - len(tasks)
            tasks = group_tasks(tasks, group, first)
            self.stats.most_batches = max(self.stats.most_batches, group)
            self.stats.tasks = first + len(tasks)
        return tasks

    def _make(self, window: Sequence[Record], lengths: list[int], batch: list[int], longest: int) -> Task:
        tokens = sum(lengths[i] for i in batch)
        records = [window[i] for i in batch]
        texts = full = [r.text for r in records]
        cap = self.max_chars
        if cap is not None:
            texts = [t[:cap] if isinstance(t, str) and len(t) > cap else t for t in full]
        rows = None
        if self.row_columns is not None:
            rows = RowInfo([r.id for r in records], [r.extra for r in records], [r.line for r in records],
                           full if any(a is not b for a, b in zip(texts, full)) else None, self.row_columns)
        task = Task(index=self.stats.tasks, seqs=[r.seq for r in records],
                    texts=texts, tokens=tokens, padded_tokens=longest * len(batch),
                    batch_size=self.batch_size, rows=rows)
        self.stats.tasks += 1
        self.stats.batches += 1
        self.stats.records += len(batch)
        self.stats.real_tokens += tokens
        self.stats.padded_tokens += task.padded_tokens
        return task


def split_by_padding(lengths: Sequence[int], overhead_tokens: float) -> list[range]:
    """Cut a batch, sorted by length, into runs that cost least to run as separate forward passes.

    A padded forward pass over a run of n texts whose longest has L tokens costs about
    ``overhead_tokens + n * L`` (token-equivalents: a fixed per-call cost plus the padded
    tokens). A batch that mixes 5- and 60-token texts wastes most of its short rows, but every
    extra call pays the overhead again; this picks the cut points that minimise the sum.

    Algorithm: the classic optimal partition of a sorted sequence into contiguous segments by
    dynamic programming, ``best[j] = min_i best[i] + overhead + (j - i) * lengths[j-1]``,
    O(n^2) with a numpy inner loop (n <= a few hundred). Returns at once (one run) when the
    batch's total padding is under one overhead, since no cut can then pay for itself.

    Args:
        lengths: token lengths in ascending order (n >= 0).
        overhead_tokens: the per-call cost in token-equivalents (>= 0); ``inf`` never cuts.

    Returns:
        Consecutive ranges covering ``range(n)`` in order (empty list for n = 0).

    Raises:
        ValueError: ``lengths`` is not ascending.
    """
    import numpy as np

    n = len(lengths)
    if n == 0:
        return []
    lens = np.asarray(lengths, dtype=np.float64)
    if n > 1 and bool((np.diff(lens) < 0).any()):
        raise ValueError("split_by_padding needs lengths in ascending order")
    if not overhead_tokens < n * lens[-1] - lens.sum():
        return [range(n)]
    best = np.zeros(n + 1)
    cut = np.zeros(n + 1, dtype=np.int64)
    starts = np.arange(n + 1, dtype=np.float64)
    for j in range(1, n + 1):
        costs = best[:j] + overhead_tokens + (j - starts[:j]) * lens[j - 1]
        i = int(np.argmin(costs))
        best[j], cut[j] = costs[i], i
    runs, j = [], n
    while j > 0:
        runs.append(range(int(cut[j]), j))
        j = int(cut[j])
    return runs[::-1]


def within_budget(runs: list[range], sorted_lengths: list[int], max_tokens: int | None) -> list[range]:
    """Cut each run of a length-sorted batch further so that no forward pass holds more than
    ``max_tokens`` padded tokens (rows x longest); a single row over budget runs alone.

    This is where ``--max-batch-tokens`` holds exactly: the driver formed the task from length
    estimates. Returns the runs unchanged when ``max_tokens`` is None."""
    if max_tokens is None:
        return runs
    out: list[range] = []
    for run in runs:
        start = run.start
        for j in range(run.start, run.stop):
            if j > start and (j - start + 1) * sorted_lengths[j] > max_tokens:
                out.append(range(start, j))
                start = j
        out.append(range(start, run.stop))
    return out
