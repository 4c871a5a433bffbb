"""Shards: an input file cut into contiguous pieces a worker reads on its own (sharded mode).

A shard is a range of the input: bytes ``[start, end)`` of a JSONL, CSV or TXT file, cut at
line ends (for CSV, at a line end outside any quoted field: one preceded by an even number of
``"`` characters, since RFC 4180 escapes a quote as ``""``), or rows ``[start, end)`` of a
Parquet file, cut at row-group boundaries. ``first_line`` is the 1-based line (row) number
of the shard's first line, so a worker numbers lines and TXT ids exactly as record mode does.

Sizes follow *factoring* (Hummel, Schonberg & Flynn, "Factoring: a method for scheduling
parallel loops", CACM 35(8), 1992), the refinement of guided self-scheduling (Polychronopoulos
& Kuck, "Guided self-scheduling", IEEE Trans. Computers C-36(12), 1987): work is handed out in
rounds of N equal chunks, each ``remaining / (2 N)`` of what is left when the round starts, so
chunks are large at first (little bookkeeping) and shrink towards the end (the last ones do
not leave workers idle), bounded below by ``min_size`` and above by ``max_size``.
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
        first_line: 1-based line (Parquet: row) number of the first line of the range; 0 when
            not known (a JSONL shard, planned without reading the file): the worker then
            numbers lines from 1 within the shard and the driver shifts its errors part's line
            numbers when it concatenates the parts (``io.shard_store``).
    """

    start: int
    end: int
    first_line: int


def factoring_sizes(total: int, workers: int, min_size: int, max_size: int) -> Iterator[int]:
    """Target chunk sizes for ``total`` units over ``workers`` workers by factoring (x = 2).

    Yields sizes in units (bytes or rows) that sum to at least ``total``: rounds of ``workers``
    chunks of ``ceil(R / (2 * workers))`` each, R being what is left when the round starts,
    clamped to ``[min_size, max_size]``. Source: Hummel, Schonberg & Flynn 1992 (see module doc).
    """
    left = total
    while left > 0:
        size = min(max_size, max(min_size, math.ceil(left / (2 * max(1, workers)))))
        for _ in range(max(1, workers)):
            if left <= 0:
                return
            yield size
            left -= size


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


def plan_text(path: str, start: int, first_line: int, workers: int, min_bytes: int,
              max_bytes: int) -> list[Shard]:
    """Cut bytes ``[start, size)`` of a JSONL/CSV/TXT file into shards by factoring, each cut
    moved forward to the next record end. ``start`` must be a record start (``data_start`` or
    a committed shard's end), ``first_line`` its line number. CSV and TXT: reads the range once
    (counting line ends, and for CSV quotes, at about memory speed); JSONL: reads only around
    each cut, and the shards' ``first_line`` is 0 (not known)."""
    csv = path.lower().endswith(".csv")
    numbered = not path.lower().endswith((".jsonl", ".ndjson"))  # JSONL: cut without reading (first_line 0)
    size = os.path.getsize(path)
    shards: list[Shard] = []
    pos, line = start, first_line if numbered else 0
    with open(path, "rb") as f:
        for target in factoring_sizes(size - start, workers, min_bytes, max_bytes):
            if pos >= size:
                break
            cut = min(size, pos + target)
            if not numbered:
                cut = _line_end(f, cut - 1, size, False, False)[0] if cut < size else size
                shards.append(Shard(pos, cut, 0))
                pos = cut
                continue
            lines, quotes = _count(f, pos, cut, csv)
            if cut < size:
                f.seek(cut - 1)
                if f.read(1) != b"\n" or (csv and quotes % 2):
                    cut, more, _ = _line_end(f, cut, size, quotes % 2 == 1, csv)
                    lines += more
            shards.append(Shard(pos, cut, line))
            pos, line = cut, line + lines
    return shards


def plan_parquet(path: str, start_row: int, workers: int, min_rows: int, max_rows: int) -> list[Shard]:
    """Cut rows ``[start_row, num_rows)`` of a Parquet file into shards by factoring, each cut
    moved forward to the next row-group boundary (a row group is never split by the plan)."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    bounds, row = [], 0
    for g in range(meta.num_row_groups):
        row += meta.row_group(g).num_rows
        bounds.append(row)
    total = row
    shards: list[Shard] = []
    pos = start_row
    for target in factoring_sizes(total - start_row, workers, min_rows, max_rows):
        if pos >= total:
            break
        cut = next((b for b in bounds if b >= pos + target), total)
        shards.append(Shard(pos, cut, pos + 1))
        pos = cut
    return shards


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


def shard_lines(path: str, shard: Shard) -> int:
    """Lines in a shard (line ends in its bytes; Parquet: its rows)."""
    if path.lower().endswith(".parquet"):
        return shard.end - shard.start
    with open(path, "rb") as f:
        return _count(f, shard.start, shard.end, False)[0]
