"""Shards: an input file cut into contiguous pieces a worker reads on its own (sharded mode).

A ``Shard`` is bytes ``[start, end)`` of a JSONL, CSV or TXT file cut at line ends (for CSV,
outside any quoted field), or rows ``[start, end)`` of a Parquet file cut at row-group
boundaries; ``first_line`` numbers its lines as record mode does. Sizes follow factoring
(Hummel, Schonberg & Flynn, CACM 35(8), 1992), with a floor set by the driver's measured cost
per shard (``FactoringPlan``); ``ShardPlanner`` cuts lazily, one shard at a time.
``split_shard`` halves a shard at a record end. The rules: docs/sharded.md, "Shard sizes".
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Iterator

TEXT_FORMATS = (".jsonl", ".ndjson", ".csv", ".txt")
SPLITTABLE = TEXT_FORMATS + (".parquet",)
_BLOCK = 1 << 20


@dataclass(slots=True)
class Shard:
    """A range of the input file.

    Attributes:
        start, end: byte offsets (text formats) or 0-based row numbers (Parquet), end excluded.
        first_line: 1-based line (Parquet: row) number of the first line of the range. 0 (not
            known) only in a checkpoint written by an older parainfer, which cut JSONL without
            counting lines: the driver then shifts that errors part's line numbers when it
            concatenates the parts (``io.shards.store``).
    """

    start: int
    end: int
    first_line: int


DRIVER_LOAD = 0.5  # the most of the driver's time that floor-size shards may take (FactoringPlan)


class FactoringPlan:
    """Shard sizes one at a time by factoring, with a floor set by the driver's cost per shard.

    Factoring (Hummel, Schonberg & Flynn 1992; x = 2), the refinement of guided self-scheduling
    (Polychronopoulos & Kuck 1987, chunk = remaining / N): rounds of ``workers`` equal chunks of
    ``ceil(R / (2 N))`` units (bytes or rows or records), R being what is left when the round
    starts, clamped to ``[floor, max_size]``.

    The floor: ``min_size`` until ``observe`` gives the driver's seconds per shard ``d`` and a
    worker's seconds per unit ``u``; then ``max(min_size, ceil(N d / (DRIVER_LOAD u)))``. With
    every worker on floor-size shards, N workers finish ``N / (floor u)`` shards a second and
    the driver spends ``d`` on each: at most ``DRIVER_LOAD`` of its time. (A fixed floor cut 1M
    records into ~3,600 shards for 1,024 workers, and the serial per-shard work then took much
    of the job.) The floor moves as measurements come in; a round's size is fixed when it starts.

    Raises ValueError for workers < 1, min_size < 1, max_size < min_size or total < 0.
    """

    def __init__(self, total: int, workers: int, min_size: int, max_size: int, driver_load: float = DRIVER_LOAD):
        if workers < 1 or min_size < 1 or max_size < min_size or total < 0 or not 0 < driver_load <= 1:
            raise ValueError(f"factoring plan needs workers >= 1, 1 <= min_size <= max_size, total >= 0 and "
                             f"0 < driver_load <= 1; got workers={workers}, min_size={min_size}, "
                             f"max_size={max_size}, total={total}, driver_load={driver_load}")
        self.left, self.workers, self.min_size, self.max_size = total, workers, min_size, max_size
        self.driver_load = driver_load
        self.driver_s: float | None = None  # driver seconds per shard (measured)
        self.unit_s: float | None = None  # worker seconds per unit (measured)
        self._round_left = self._size = self._share = 0

    def observe(self, driver_s: float | None, unit_s: float | None) -> None:
        """The latest measured driver seconds per shard and worker seconds per unit (None or
        <= 0: not known yet)."""
        self.driver_s = driver_s if driver_s and driver_s > 0 else None
        self.unit_s = unit_s if unit_s and unit_s > 0 else None

    @property
    def floor(self) -> int:
        """The smallest target size now (units), at most ``max_size``."""
        if self.driver_s is None or self.unit_s is None:
            return self.min_size
        grown = math.ceil(self.workers * self.driver_s / (self.driver_load * self.unit_s))
        return min(self.max_size, max(self.min_size, grown))

    def next_size(self) -> int:
        """The next target size in units (0 when nothing is left); call ``take`` with what the
        shard really took (a cut moves forward to a record end)."""
        if self.left <= 0:
            return 0
        if self._round_left == 0:
            self._size, self._round_left = math.ceil(self.left / (2 * self.workers)), self.workers
            self._share = math.ceil(self.left / self.workers)
        self._round_left -= 1
        # Near the end the floor is at most an equal share of the round's rest, so the last
        # round gives every worker a piece instead of leaving most of them idle.
        floor = max(self.min_size, min(self.floor, self._share))
        return min(self.max_size, max(floor, self._size))

    def take(self, units: int) -> None:
        """``units`` of the rest were handed out."""
        self.left -= units


def factoring_sizes(total: int, workers: int, min_size: int, max_size: int) -> Iterator[int]:
    """Target chunk sizes for ``total`` units over ``workers`` workers by factoring (x = 2),
    with nothing measured (``FactoringPlan`` with the floor ``min_size``). They sum to at least
    ``total``. Source: Hummel, Schonberg & Flynn 1992 (see module doc)."""
    plan = FactoringPlan(total, max(1, workers), min_size, max(min_size, max_size))
    while size := plan.next_size():
        plan.take(size)
        yield size


def _count(f, a: int, b: int, quotes: bool = True) -> tuple[int, int]:
    """(newlines, quote characters; 0 unless ``quotes``) in bytes [a, b) of the open file ``f``."""
    f.seek(a)
    lines = n_quotes = 0
    left = b - a
    block = bytearray(min(_BLOCK, max(left, 1)))
    view = memoryview(block)
    while left > 0:
        n = f.readinto(view[:min(len(block), left)])
        if not n:
            break
        chunk = view[:n] if n < len(block) else block
        lines += chunk.count(b"\n") if isinstance(chunk, bytearray) else bytes(chunk).count(b"\n")
        if quotes:
            n_quotes += chunk.count(b'"') if isinstance(chunk, bytearray) else bytes(chunk).count(b'"')
        left -= n
    return lines, n_quotes


def _line_end(f, pos: int, end: int, quotes_odd: bool, csv: bool) -> tuple[int, int, bool]:
    """From ``pos`` (a position inside a line), the offset just after the next line end at which
    a record ends (CSV: outside quotes), capped at ``end``; returns (offset, newlines passed,
    quote parity there)."""
    f.seek(pos)
    lines = 0
    while pos < end:
        raw = f.readline()
        if not raw:
            return end, lines, quotes_odd
        pos += len(raw)
        if raw.endswith(b"\n"):
            lines += 1
        if csv:
            quotes_odd ^= raw.count(b'"') % 2 == 1
        if not (csv and quotes_odd):
            return min(pos, end), lines, quotes_odd
    return end, lines, quotes_odd


def data_start(path: str) -> tuple[int, int]:
    """(byte offset, 1-based line number) where a text file's records begin: after the CSV
    header record (which may span lines), else 0 and line 1."""
    if not path.lower().endswith(".csv"):
        return 0, 1
    with open(path, "rb") as f:
        offset, lines, _ = _line_end(f, 0, os.path.getsize(path), False, True)
    return offset, 1 + lines


class TextCutter:
    """Cuts bytes ``[start, end)`` of a JSONL/CSV/TXT file (``end``: None, the file's size) into
    consecutive shards, one ``cut`` at a time, each cut moved forward to the next record end that
    is also a window boundary: after line ``k * window`` (1-based lines, the header's included;
    CSV: the first record end from there on). ``start`` must be a record start (``data_start``
    or a committed shard's end), ``first_line`` its line number. Windows (``batch.windows``)
    then never straddle two shards, so every shard forms the batches record mode forms. Reads
    each shard's range once, counting line ends (and for CSV quotes) at about memory speed, so
    every shard knows its first line number: a JSONL row without an id gets its line number as
    its id, as in record mode. Holds the file open until ``close``."""

    def __init__(self, path: str, start: int, first_line: int, window: int = 1, end: int | None = None):
        self.csv = path.lower().endswith(".csv")
        self.size = os.path.getsize(path) if end is None else end
        self.pos, self.line = start, first_line
        self.window = max(1, window)
        self._f = open(path, "rb")

    @property
    def left(self) -> int:
        """Bytes not yet cut."""
        return max(0, self.size - self.pos)

    def cut(self, target: int) -> Shard | None:
        """The next shard of about ``target`` bytes (>= 1) or more (up to the next window
        boundary), or None at the end of the range."""
        f, pos, size = self._f, self.pos, self.size
        if pos >= size:
            return None
        cut = min(size, pos + max(1, target))
        lines, quotes = _count(f, pos, cut, self.csv)
        if cut < size:
            f.seek(cut - 1)
            if f.read(1) != b"\n" or (self.csv and quotes % 2):
                cut, more, _ = _line_end(f, cut, size, quotes % 2 == 1, self.csv)
                lines += more
        if cut < size and self.window > 1 and self.line:
            cut, more = self._to_window_end(cut, self.line + lines)
            lines += more
        shard = Shard(pos, cut, self.line)
        self.pos, self.line = cut, self.line + lines
        return shard

    def _to_window_end(self, cut: int, line: int) -> tuple[int, int]:
        """From ``cut`` (a record end where line ``line`` starts), the first record end at or
        after the end of line ``k * window`` (k >= 1); returns (offset, line ends passed)."""
        need = (1 - line) % self.window
        if need == 0:
            return cut, 0
        end, passed = _skip_lines(self._f, cut, self.size, need)
        if self.csv and end < self.size and _count(self._f, cut, end)[1] % 2:
            end, more, _ = _line_end(self._f, end, self.size, True, True)
            passed += more
        return end, passed

    def close(self) -> None:
        self._f.close()


def _skip_lines(f, pos: int, end: int, n: int) -> tuple[int, int]:
    """(the offset just after the ``n``-th line end from ``pos``, capped at ``end``; line ends passed)."""
    f.seek(pos)
    found = 0
    while found < n and pos < end:
        block = f.read(min(_BLOCK, end - pos))
        if not block:
            break
        c = block.count(b"\n")
        if found + c < n:
            found += c
            pos += len(block)
            continue
        i = -1
        for _ in range(n - found):
            i = block.index(b"\n", i + 1)
        return pos + i + 1, n
    return min(pos, end), found


class ParquetCutter:
    """Cuts rows ``[start_row, num_rows)`` of a Parquet file into consecutive shards, each cut
    moved forward to the next row-group boundary (``window`` 1: a row group is never split),
    or with ``window`` > 1 to the next multiple of ``window`` rows (a window boundary,
    ``batch.windows``; the reader slices a row group two shards share)."""

    def __init__(self, path: str, start_row: int, window: int = 1):
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(path).metadata
        self.bounds, row = [], 0
        for g in range(meta.num_row_groups):
            row += meta.row_group(g).num_rows
            self.bounds.append(row)
        self.total, self.pos = row, start_row
        self.window = max(1, window)

    @property
    def left(self) -> int:
        """Rows not yet cut."""
        return max(0, self.total - self.pos)

    def cut(self, target: int) -> Shard | None:
        """The next shard of about ``target`` rows (>= 1), or None after the last row."""
        pos = self.pos
        if pos >= self.total:
            return None
        if self.window > 1:
            self.pos = min(self.total, -(-(pos + max(1, target)) // self.window) * self.window)
        else:
            self.pos = next((b for b in self.bounds if b >= pos + max(1, target)), self.total)
        return Shard(pos, self.pos, pos + 1)

    def close(self) -> None:
        pass


class ShardPlanner:
    """The rest of an input file handed out as shards one at a time: a cutter (``TextCutter``
    or ``ParquetCutter``) driven by a ``FactoringPlan`` over what is left. Used by the driver
    (``batch.shard_mode.ShardDriver``) so each round's sizes use the driver cost and worker speed
    measured so far (``observe``). ``first_line`` is ignored for Parquet (rows number
    themselves). ``window``: shards end at window boundaries (``TextCutter``, ``ParquetCutter``).
    Raises ValueError as ``FactoringPlan`` does."""

    def __init__(self, path: str, start: int, first_line: int, workers: int, min_size: int, max_size: int,
                 window: int = 1):
        parquet = path.lower().endswith(".parquet")
        self.cutter = (ParquetCutter(path, start, window) if parquet
                       else TextCutter(path, start, first_line, window))
        self.plan = FactoringPlan(self.cutter.left, workers, min_size, max_size)
        self.planned = 0

    @property
    def done(self) -> bool:
        """True when the whole input has been cut."""
        return self.cutter.left <= 0

    def next(self) -> Shard | None:
        """The next shard, or None when the input is all cut."""
        shard = self.cutter.cut(self.plan.next_size() or 1)
        if shard is not None:
            self.plan.take(shard.end - shard.start)
            self.planned += 1
        return shard

    def observe(self, driver_s: float | None, unit_s: float | None) -> None:
        """See ``FactoringPlan.observe`` (``unit_s``: worker seconds per byte, Parquet: per row)."""
        self.plan.observe(driver_s, unit_s)

    def close(self) -> None:
        self.cutter.close()


def plan_text(path: str, start: int, first_line: int, workers: int, min_bytes: int,
              max_bytes: int) -> list[Shard]:
    """All shards of bytes ``[start, size)`` of a JSONL/CSV/TXT file at once, by factoring with
    nothing measured (``ShardPlanner``; see ``TextCutter`` for the cuts)."""
    planner = ShardPlanner(path, start, first_line, workers, min_bytes, max_bytes)
    try:
        return list(iter(planner.next, None))
    finally:
        planner.close()


def plan_parquet(path: str, start_row: int, workers: int, min_rows: int, max_rows: int) -> list[Shard]:
    """All shards of rows ``[start_row, num_rows)`` of a Parquet file at once, by factoring
    with nothing measured, each cut at a row-group boundary (``ParquetCutter``)."""
    return plan_text(path, start_row, 1, workers, min_rows, max_rows)  # ShardPlanner picks the cutter


def split_shard(path: str, shard: Shard) -> tuple[Shard, Shard] | None:
    """Bisect a shard at the record end nearest after its middle (for isolating a record that
    kills its worker); None when the shard holds a single record (line, CSV record or row)."""
    if path.lower().endswith(".parquet"):
        if shard.end - shard.start < 2:
            return None
        mid = (shard.start + shard.end) // 2
        return Shard(shard.start, mid, shard.first_line), Shard(mid, shard.end, mid + 1)
    csv = path.lower().endswith(".csv")
    with open(path, "rb") as f:
        middle = (shard.start + shard.end) // 2
        lines, quotes = _count(f, shard.start, middle)
        cut, more, _ = _line_end(f, middle, shard.end, quotes % 2 == 1, csv)
        if cut >= shard.end:  # no record end after the middle: try the first record end instead
            cut, lines, _ = _line_end(f, shard.start, shard.end, False, csv)
            more = 0
        if cut >= shard.end:
            return None
    second = shard.first_line + lines + more if shard.first_line else 0
    return Shard(shard.start, cut, shard.first_line), Shard(cut, shard.end, second)


def split_at_window(path: str, shard: Shard, window: int) -> tuple[Shard, Shard] | None:
    """Bisect a shard at the window boundary (``TextCutter``, ``ParquetCutter``) nearest after
    its middle, or its first one; None when no window boundary lies inside it (it holds one
    window or part of one: only ``split_shard`` can cut it, and that changes its batches)."""
    if window <= 1:
        return None
    if path.lower().endswith(".parquet"):
        first = -(-(shard.start + 1) // window) * window
        mid = -(-((shard.start + shard.end) // 2) // window) * window
        cut = mid if mid < shard.end else first
        return (Shard(shard.start, cut, shard.first_line), Shard(cut, shard.end, cut + 1)) if cut < shard.end else None
    if not shard.first_line:
        return None
    for target in ((shard.end - shard.start) // 2, 1):
        cutter = TextCutter(path, shard.start, shard.first_line, window, end=shard.end)
        try:
            first = cutter.cut(max(1, target))
            if first is not None and first.end < shard.end:
                return first, Shard(first.end, shard.end, cutter.line)
        finally:
            cutter.close()
    return None


def shard_lines(path: str, shard: Shard) -> int:
    """Lines in a shard (line ends in its bytes; Parquet: its rows)."""
    if path.lower().endswith(".parquet"):
        return shard.end - shard.start
    with open(path, "rb") as f:
        return _count(f, shard.start, shard.end, False)[0]
