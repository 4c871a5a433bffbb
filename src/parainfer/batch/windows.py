"""Windows anchored at global input positions: the same batches whatever cuts the input.

A job's batches are formed window by window (``tasks.TaskBuilder.build``). For the output
bytes to be a function of the input and the options only, a window must hold the same records
whoever reads it: the record-mode driver from the start of the input, a resume from its
checkpoint, or a worker from its shard. So window ``k`` is defined by position, not by reading:
it holds the input's items (records and unusable rows alike) whose 0-based *input position*
lies in ``[k * W, (k + 1) * W)``, W being ``JobSetup.window``. The input position of an item is
its 0-based line in the file (``Record.line - 1``; a Parquet row's number; a CSV record that
spans lines is placed by its first line; blank lines take positions and hold no record), which
a shard knows without reading the shards before it (``io.shards.plan`` cuts shards at line
multiples of W). An item without a line (``line`` 0: records made in memory) is placed by its
``seq``. docs/batch.md, "Same bytes whatever runs the job".
"""

from __future__ import annotations

from typing import Iterator, Union

from parainfer.records import Record, RecordError

Item = Union[Record, RecordError]


def position(item: Item) -> int:
    """The 0-based input position of ``item``: ``line - 1`` when the line is known, else ``seq``."""
    return item.line - 1 if item.line > 0 else item.seq


class WindowReader:
    """Reads an iterator of items (input order) window by window.

    Args:
        items: records and unusable rows in input order (positions never decrease).
        size: the window size W in input positions (>= 1).

    ``next()`` returns the items of the next window that holds any, in input order (empty when
    the items are exhausted); ``done`` is True once they are. One item is read ahead.
    Raises ValueError for ``size < 1``.
    """

    def __init__(self, items: Iterator[Item], size: int):
        if size < 1:
            raise ValueError(f"window size must be >= 1, got {size}")
        self._items, self.size = items, size
        self._ahead: Item | None = next(items, None)

    @property
    def done(self) -> bool:
        return self._ahead is None

    def next(self) -> list[Item]:
        """The items of the next window (all of them share ``position(item) // size``)."""
        first = self._ahead
        if first is None:
            return []
        window, key = [first], position(first) // self.size
        for item in self._items:
            if position(item) // self.size != key:
                self._ahead = item
                return window
            window.append(item)
        self._ahead = None
        return window


def from_window_start(items: Iterator[Item], resumed: int, size: int) -> Iterator[Item]:
    """The items from the start of the window that holds the item of seq ``resumed`` on.

    A resume after ``resumed`` committed items restarts at a window boundary, so that the
    records of a partly committed window are computed again in their original batches; the
    caller writes nothing for a seq below ``resumed`` (already committed: exactly once).
    ``resumed`` 0: ``items`` unchanged."""
    if resumed <= 0:
        return items
    held: list[Item] = []
    key = None
    for item in items:
        if item.seq >= resumed:
            if key is not None and position(item) // size != key:
                held = []
            return _chain(held, item, items)
        k = position(item) // size
        if k != key:
            held, key = [], k
        held.append(item)
    return iter(())


def _chain(held: list[Item], item: Item, rest: Iterator[Item]) -> Iterator[Item]:
    yield from held
    yield item
    yield from rest
