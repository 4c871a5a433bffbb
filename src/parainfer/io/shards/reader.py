"""Read one shard's records in a worker (sharded mode), exactly as record mode reads them.

The format readers of ``io.sources`` are reused on the shard's bytes (or Parquet row groups);
only line numbers are shifted to the shard's ``first_line``, so ids (TXT: the line number),
error lines and every value match what ``open_source`` yields for the same rows. ``seq`` is
the 0-based position inside the shard (the worker's reorder key).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from parainfer.io import sources
from parainfer.io.shards.plan import Shard, data_start
from parainfer.records import Record, RecordError


@dataclass(slots=True)
class ShardInput:
    """What a worker needs to read a shard: the input path and the columns (as the Source has them)."""

    path: str
    text_column: str = "text"
    id_column: str = "id"
    allow_messages: bool = False


def _lines(f: BinaryIO, start: int, end: int) -> Iterator[bytes]:
    """The raw lines of bytes [start, end) (end is a line end or the end of the file)."""
    f.seek(start)
    left = end - start
    while left > 0:
        raw = f.readline(left)
        if not raw:
            return
        left -= len(raw)
        yield raw


def _shifted(rows: sources.Rows, shift: int) -> sources.Rows:
    for line, row in rows:
        yield line + shift, row


def _text_rows(inp: ShardInput, shard: Shard) -> sources.Rows:
    ext = os.path.splitext(inp.path)[1].lower()
    with open(inp.path, "rb") as f:
        body = _lines(f, shard.start, shard.end)
        if ext == ".txt":
            yield from sources._txt_rows(body, shard.first_line)
        elif ext == ".csv":
            head_end, first = data_start(inp.path)
            f2 = open(inp.path, "rb")
            try:  # the header record first (read as record mode reads it), then the shard's lines
                header = list(_lines(f2, 0, head_end))
            finally:
                f2.close()
            yield from _shifted(sources._csv_rows(itertools.chain(header, body)), shard.first_line - first)
        elif shard.start == 0:
            yield from sources._jsonl_rows(body)
        else:  # a leading blank line (skipped, no row) keeps line 1's BOM handling off this shard
            yield from _shifted(sources._jsonl_rows(itertools.chain((b"\n",), body)), (shard.first_line or 1) - 2)


def _parquet_rows(inp: ShardInput, shard: Shard) -> sources.Rows:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(inp.path)
    groups, row = [], 0
    first_row = None
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if row + n > shard.start and row < shard.end:
            groups.append(g)
            first_row = row if first_row is None else first_row
        row += n
    if not groups:
        return
    line = first_row
    for batch in pf.iter_batches(batch_size=4096, row_groups=groups):
        lo = max(0, shard.start - line)
        hi = min(batch.num_rows, shard.end - line)
        if lo < hi:
            part = batch.slice(lo, hi - lo)
            try:
                rows = part.to_pylist()
            except Exception:  # noqa: BLE001 - one bad value: find the row, quarantine it
                rows = [sources._parquet_row(part, i) for i in range(part.num_rows)]
            for i, r in enumerate(rows):
                yield line + lo + i + 1, r
        line += batch.num_rows
        if line >= shard.end:
            return


def shard_records(inp: ShardInput, shard: Shard) -> Iterator[Record | RecordError]:
    """The shard's rows as Records (or RecordErrors for unusable rows), in input order, seq =
    0, 1, ... within the shard; line numbers and TXT ids are the file's (a shard whose
    ``first_line`` is 0: line numbers counted from 1 at the shard's start)."""
    rows = _parquet_rows(inp, shard) if inp.path.lower().endswith(".parquet") else _text_rows(inp, shard)
    text_column, id_column = (("text", "id") if inp.path.lower().endswith(".txt")
                              else (inp.text_column, inp.id_column))
    for seq, (line, row) in enumerate(rows):
        if isinstance(row, str):
            yield sources.unusable(seq, line, row, id_column)
            continue
        try:
            yield sources.to_record(seq, line, row, text_column, id_column, inp.allow_messages)
        except Exception as e:  # noqa: BLE001 - as Source.__iter__: the record is quarantined
            yield RecordError(seq, line, None, f"record could not be read: {type(e).__name__}: {e}"[:300])
