"""Dynamic batching: inputs of concurrent requests are gathered into model batches.

Each request puts its B inputs into one shared waiting queue (one :class:`Item` and one future
per input) and awaits the futures; :class:`DynamicBatcher`'s loop cuts batches (``take_batches``)
while a replica has a free slot, once the queue holds a full batch, its oldest input waited
``max_wait_s``, or waiting is not worth it (at the last second's arrival rate fewer than one
more input is expected: ``rate x max_wait_s < 1``). Each batch is built around the oldest
input left: its length group and the nearest ones, oldest first within each group, under
``max_batch_size`` and ``max_batch_tokens``; once the oldest input has waited ``max_age_s``
the overdue inputs go first in arrival order, whatever their lengths. Batches go to
``dispatch`` (the replica router), which resolves the futures. Rules, reasons and a worked
example: docs/serving.md, "The path of a request", steps 2-3.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable


# Arrival rate window (s) for the "is waiting worth it" test.
ARRIVAL_WINDOW_S = 1.0


class QueueFull(Exception):
    """The waiting queue cannot take a request's inputs (HTTP 429).

    Attributes:
        retry_after_s: a hint of when there may be room (whole seconds, >= 1).
    """

    def __init__(self, waiting: int, asked: int, limit: int, retry_after_s: int):
        super().__init__(f"queue full: {waiting} inputs waiting + {asked} asked > max_queue {limit}")
        self.retry_after_s = retry_after_s


@dataclass(eq=False)
class Item:
    """One input waiting for a model batch.

    Attributes:
        text: the input text.
        tokens: its length in model tokens (truncated to the window); the sort key and cost.
        future: resolves to the model's output dict for this text, or raises.
        t_enqueued: ``time.monotonic()`` when it was queued.
        key: its arrival number (unique, increasing) in the batcher's queue.
        t_dispatched: ``time.monotonic()`` when its batch was handed to the router (0: not yet).
        compute_s: seconds its batch computed on the replica (set with its result).
        t_done: ``time.monotonic()`` when its future was resolved on the loop (0: not yet).
        batch: the number of the batch it went in (batches are numbered 1, 2, ... in the order
            the batcher cut them; 0: not yet).
    """

    text: str
    tokens: int
    future: asyncio.Future = field(repr=False)
    t_enqueued: float = field(default_factory=time.monotonic)
    key: int = 0
    t_dispatched: float = 0.0
    compute_s: float = 0.0
    t_done: float = 0.0
    batch: int = 0


def take_batches(waiting: list[Item], max_batch_size: int, slots: int, window: int,
                 group_by_length: bool = True, max_batch_tokens: int | None = None, spread: int = 1,
                 now: float = 0.0, max_age_s: float | None = None) -> list[list[Item]]:
    """Cut up to ``slots`` batches from ``waiting`` (oldest first); see the module docstring.

    Each batch is built around the oldest input left (``anchor_batch``), or, once that input has
    waited ``max_age_s``, from the overdue inputs in arrival order (``overdue_batch``). Either way
    a batch takes from each length group (``length_group``) its oldest inputs, so inside a group
    inputs are dispatched in arrival order.

    Args:
        waiting: queued items in arrival order.
        max_batch_size: most items per batch (>= 1).
        slots: most batches to return (free replica slots).
        window: how many of the oldest items are looked at (>= max_batch_size).
        group_by_length: False cuts batches in arrival order (no grouping).
        max_batch_tokens: most padded tokens (items x longest) per batch; None: no budget. An
            item over the budget alone makes a batch of its own.
        spread: idle replicas (at most ``slots``): while fewer batches than that were cut, the
            largest is halved (``spread_runs``), so that idle replicas share the inputs waiting
            instead of one taking them all while the others wait.
        now: the current ``time.monotonic()`` (the clock of ``Item.t_enqueued``).
        max_age_s: an item queued at least this long (``now - t_enqueued``) is overdue; None:
            no age limit.

    Returns:
        Batches in dispatch order; inside a batch items are sorted by (length group, arrival)
        when grouping. The caller removes the returned items from its queue.
    """
    if slots < 1 or not waiting:
        return []
    head = list(waiting[:window])
    if not group_by_length:
        runs = cut_runs(head, max_batch_size, max_batch_tokens)
        return spread_runs(runs, min(spread, slots))[:slots]
    batches: list[list[Item]] = []
    while head and len(batches) < slots:
        overdue = max_age_s is not None and now - head[0].t_enqueued >= max_age_s
        batch = (overdue_batch(head, max_batch_size, max_batch_tokens, now, max_age_s) if overdue  # type: ignore[arg-type]
                 else anchor_batch(head, max_batch_size, max_batch_tokens))
        taken = {id(it) for it in batch}
        head = [it for it in head if id(it) not in taken]
        batches.append(sorted(batch, key=lambda it: (length_group(it.tokens), it.key)))
    return spread_runs(batches, min(spread, slots))[:slots]  # halves of a batch go out together


def length_group(tokens: int) -> int:
    """The length group of an input of ``tokens`` tokens: its length itself below 16, then eight
    groups to an octave (16-17, 18-19, ... 32-35, ... 64-71, ... 128-143, ...), so the inputs of
    one group differ by at most 12.5% in length."""
    if tokens < 16:
        return tokens
    octave = tokens.bit_length() - 1  # 2**octave <= tokens
    return 16 + 8 * (octave - 4) + (tokens >> (octave - 3)) - 8


def _fits(count: int, longest: int, max_batch_size: int, max_batch_tokens: int | None) -> bool:
    """Whether a batch of ``count`` items padded to ``longest`` tokens is within the limits."""
    return count <= max_batch_size and (max_batch_tokens is None or count * longest <= max_batch_tokens)


def anchor_batch(head: list[Item], max_batch_size: int, max_batch_tokens: int | None) -> list[Item]:
    """The batch of the oldest item of ``head`` (arrival order): its length group first, then the
    nearest groups (shorter first on a tie), each group's items oldest first, while the batch keeps
    within ``max_batch_size``, ``max_batch_tokens`` (padded: items x longest) and a length spread
    of longest <= 2 x shortest + 16 tokens (wider would be mostly padding). A group stops at its
    first item that does not fit, so a younger item never passes an older one of its group."""
    groups: dict[int, list[Item]] = {}
    for item in head:
        groups.setdefault(length_group(item.tokens), []).append(item)
    home = length_group(head[0].tokens)
    batch = [head[0]]
    shortest = longest = head[0].tokens
    for g in sorted(groups, key=lambda g: (abs(g - home), g)):
        for item in groups[g][1:] if g == home else groups[g]:
            low, high = min(shortest, item.tokens), max(longest, item.tokens)
            if high > 2 * low + 16 or not _fits(len(batch) + 1, high, max_batch_size, max_batch_tokens):
                break
            batch.append(item)
            shortest, longest = low, high
        if len(batch) >= max_batch_size:
            break
    return batch


def overdue_batch(head: list[Item], max_batch_size: int, max_batch_tokens: int | None, now: float,
                  max_age_s: float) -> list[Item]:
    """The next batch once the oldest of ``head`` (arrival order) has waited ``max_age_s``: the
    overdue items (``now - t_enqueued >= max_age_s``; the oldest always) in arrival order, whatever their
    lengths, while the batch keeps within ``max_batch_size`` and ``max_batch_tokens`` (padded:
    items x longest; the oldest always goes, alone if it fills the budget); then, while there is
    room, younger items no longer than the batch's longest (oldest first: they add no padding),
    never one whose length group has an older item left behind. So an input waits about the age
    limit plus the batches in flight at most, whatever its length: a long input among a stream of
    short ones is not left behind by length grouping (TEI's queue is FIFO for the same reason;
    this keeps grouping until the limit)."""
    batch: list[Item] = []
    blocked: set[int] = set()  # groups with an item left behind
    longest = 0
    for item in head:
        group = length_group(item.tokens)
        overdue = item is head[0] or now - item.t_enqueued >= max_age_s
        high = max(longest, item.tokens)
        if group in blocked or (not overdue and item.tokens > longest) or (
                batch and not _fits(len(batch) + 1, high, max_batch_size, max_batch_tokens)):
            blocked.add(group)
            if overdue and batch and not _fits(len(batch) + 1, longest, max_batch_size, max_batch_tokens):
                break  # full
            continue
        batch.append(item)
        longest = high
    return batch


def spread_runs(runs: list[list[Item]], at_least: int) -> list[list[Item]]:
    """``runs`` with the largest one halved (its shorter half first, in place) until there are
    ``at_least`` runs or none holds two items: 4 inputs and 2 idle replicas make 2 batches of
    2, run side by side, instead of 1 batch of 4 on one replica."""
    runs = list(runs)
    while len(runs) < at_least:
        i = max(range(len(runs)), key=lambda k: len(runs[k]), default=None)
        if i is None or len(runs[i]) < 2:
            break
        half = len(runs[i]) // 2
        runs[i:i + 1] = [runs[i][:half], runs[i][half:]]
    return runs


def cut_runs(ordered: list[Item], max_batch_size: int, max_batch_tokens: int | None) -> list[list[Item]]:
    """Cut ``ordered`` into consecutive runs of at most ``max_batch_size`` items whose padded cost
    (items x longest, as a padded encoder batch pays; TEI's ``--max-batch-tokens``) stays within
    ``max_batch_tokens`` (None: no budget). An item over the budget alone makes a run of its own.
    Sorted input gives long inputs few to a run and short ones many."""
    runs: list[list[Item]] = []
    run: list[Item] = []
    longest = 0
    for item in ordered:
        grown = max(longest, item.tokens)
        if run and (len(run) >= max_batch_size or
                    (max_batch_tokens is not None and grown * (len(run) + 1) > max_batch_tokens)):
            runs.append(run)
            run, grown = [], item.tokens
        run.append(item)
        longest = grown
    if run:
        runs.append(run)
    return runs


class DynamicBatcher:
    """The waiting queue and the loop that turns it into batches.

    Args:
        dispatch: called with each batch (list of Items) on the event loop; must not block.
            It owns resolving the items' futures from then on.
        free_slots: how many batches may be dispatched right now (replicas with room).
        max_batch_size: most inputs per batch.
        max_wait_s: the longest the oldest input waits for a batch to fill once a slot is free
            (only while at least one more input is expected in that time; see the module docstring).
        max_queue: most inputs waiting; ``submit`` raises QueueFull beyond it.
        group_by_length: sort by token length before cutting batches (see ``take_batches``).
        window_batches: the sorting window, in batches (window = this x max_batch_size).
        max_batch_tokens: most padded tokens (inputs x longest) per batch; None: no budget.
        idle_replicas: how many replicas hold no batch now (``take_batches``' ``spread``).
        max_age_s: an input queued this long goes in the next batch, whatever its length
            (``take_batches``' ``max_age_s``); None: no age limit.

    Call ``wake()`` whenever ``free_slots()`` may have grown. All methods run on one event loop.
    """

    def __init__(self, dispatch: Callable[[list[Item]], None], free_slots: Callable[[], int],
                 max_batch_size: int = 32, max_wait_s: float = 0.005, max_queue: int = 1024,
                 group_by_length: bool = True, window_batches: int = 8, max_batch_tokens: int | None = None,
                 idle_replicas: Callable[[], int] = lambda: 1, max_age_s: float | None = None):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.dispatch, self.free_slots, self.idle_replicas = dispatch, free_slots, idle_replicas
        self.max_batch_size, self.max_wait_s, self.max_queue = max_batch_size, max_wait_s, max_queue
        self.group_by_length, self.max_batch_tokens, self.max_age_s = group_by_length, max_batch_tokens, max_age_s
        self._waiting_tokens = 0  # tokens of the inputs in self._waiting
        self.window = max(1, window_batches) * max_batch_size
        self._waiting: dict[int, Item] = {}  # insertion order = arrival order; O(1) removal
        self._keys = itertools.count()
        self._batch_numbers = itertools.count(1)
        self._wakeup = asyncio.Event()
        self.items_per_second = 0.0  # recent dispatch rate, for Retry-After (set by the owner)
        self._arrivals: collections.deque[tuple[float, int]] = collections.deque()  # (monotonic s, inputs)
        self._arrived = 0  # inputs in self._arrivals
        self._reserved = 0  # room held by admitted requests still being tokenised

    @property
    def depth(self) -> int:
        """Inputs waiting (not yet in a batch)."""
        return len(self._waiting)

    def reserve(self, count: int) -> None:
        """Hold room for ``count`` inputs (a request admitted, still being tokenised); ``submit``
        with ``reserved=True`` turns the room into queued inputs, ``release`` gives it back.

        Raises:
            QueueFull: waiting + reserved + ``count`` > max_queue (nothing is reserved).
        """
        if len(self._waiting) + self._reserved + count > self.max_queue:
            raise QueueFull(len(self._waiting) + self._reserved, count, self.max_queue, self.retry_after_s())
        self._reserved += count

    def release(self, count: int) -> None:
        """Give back room held by ``reserve`` (the request failed before ``submit``)."""
        self._reserved = max(0, self._reserved - count)

    def retry_after_s(self) -> int:
        """Seconds until the queue has likely drained: waiting / recent rate, in [1, 60]; 1 while
        no rate is known yet (a guess of 16 s from nothing would only make clients wait)."""
        if self.items_per_second <= 0:
            return 1
        return max(1, min(60, math.ceil((len(self._waiting) + self._reserved) / self.items_per_second)))

    def submit(self, texts: list[str], tokens: list[int], reserved: bool = False) -> list[Item]:
        """Queue one request's inputs; returns their Items (await ``item.future``), in order.

        Args:
            reserved: the room was taken by ``reserve(len(texts))`` already.

        Raises:
            QueueFull: the queue lacks room for all ``len(texts)`` inputs (nothing is queued).
        """
        if reserved:
            self.release(len(texts))
        elif len(self._waiting) + self._reserved + len(texts) > self.max_queue:
            raise QueueFull(len(self._waiting) + self._reserved, len(texts), self.max_queue, self.retry_after_s())
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        items = [Item(t, n, loop.create_future(), now, next(self._keys)) for t, n in zip(texts, tokens)]
        for item in items:
            self._waiting[item.key] = item
        self._waiting_tokens += sum(tokens)
        self._arrivals.append((now, len(items)))
        self._arrived += len(items)
        self._wakeup.set()
        return items

    def expected_arrivals(self, within_s: float) -> float:
        """Inputs expected in the next ``within_s`` seconds at the last second's arrival rate."""
        horizon = time.monotonic() - ARRIVAL_WINDOW_S
        while self._arrivals and self._arrivals[0][0] < horizon:
            self._arrived -= self._arrivals.popleft()[1]
        return self._arrived / ARRIVAL_WINDOW_S * within_s

    def cancel(self, items: list[Item]) -> int:
        """Drop the still-queued ones of ``items`` (client gone, timed out); returns how many."""
        dropped = 0
        for item in items:
            if self._waiting.pop(item.key, None) is not None:
                self._waiting_tokens -= item.tokens
                dropped += 1
            if not item.future.done():
                item.future.cancel()
        return dropped

    def fail_all(self, exc: BaseException) -> None:
        """Fail every queued input with ``exc`` (shutdown, no replica can run them)."""
        for item in self._waiting.values():
            if not item.future.done():
                item.future.set_exception(exc)
        self._waiting.clear()
        self._waiting_tokens = 0

    def wake(self) -> None:
        """Tell the loop that a slot may have freed up."""
        self._wakeup.set()

    async def run(self) -> None:
        """Form and dispatch batches until cancelled."""
        while True:
            await self._wait_until(lambda: bool(self._waiting) and self.free_slots() > 0)
            oldest = next(iter(self._waiting.values()))
            worth_waiting = self.expected_arrivals(self.max_wait_s) >= 1.0
            deadline = oldest.t_enqueued + (self.max_wait_s if worth_waiting else 0.0)
            await self._wait_until(self._full_batch_waiting, deadline)
            self._dispatch_now()

    def _full_batch_waiting(self) -> bool:
        return len(self._waiting) >= self.max_batch_size or (
            self.max_batch_tokens is not None and self._waiting_tokens >= self.max_batch_tokens)

    def _dispatch_now(self) -> None:
        for key in [k for k, it in self._waiting.items() if it.future.done()]:
            self._waiting_tokens -= self._waiting.pop(key).tokens  # cancelled without cancel()
        now = time.monotonic()
        batches = take_batches(list(self._waiting.values()), self.max_batch_size, self.free_slots(),
                               self.window, self.group_by_length, self.max_batch_tokens, self.idle_replicas(),
                               now, self.max_age_s)
        for batch in batches:
            number = next(self._batch_numbers)
            for item in batch:
                item.batch = number
                del self._waiting[item.key]
                self._waiting_tokens -= item.tokens
                item.t_dispatched = now
            self.dispatch(batch)

    async def _wait_until(self, ready: Callable[[], bool], deadline: float | None = None) -> None:
        """Sleep until ``ready()`` or ``deadline`` (monotonic); re-checked on every ``wake``."""
        while not ready():
            self._wakeup.clear()
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                return
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            except asyncio.TimeoutError:
                return

    def stats(self) -> dict[str, Any]:
        """Queue depth for /health and metrics."""
        return {"waiting": self.depth, "reserved": self._reserved, "max_queue": self.max_queue}
