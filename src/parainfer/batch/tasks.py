"""Records -> tasks: batching under a size and token budget, with length bucketing.

``TaskBuilder`` cuts windows of records into tasks (a task: a batch of records' input positions
and texts, with its estimated cost in tokens), sorting each window by the driver's estimated
lengths and queueing its tasks in a seeded pseudo-random order; it cuts texts longer than
``max_chars`` before any tokenising. ``group_tasks`` joins consecutive batches into one task,
``batch_sizes_split`` splits a task's batch sizes, ``TaskStats`` keeps the totals for the
report. Rules and reasons: docs/scheduling.md, "Tasks: token budget and length bucketing".
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Sequence

from parainfer.executors.base import RowInfo, Task
from parainfer.records import Record


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


