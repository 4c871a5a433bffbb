"""Output parts of sharded mode in the job's output format (JSONL, CSV or Parquet).

A worker writes each shard's rows into one part file (``batch.shard_runner``); the driver joins
the committed parts into ``--output`` at the end (``io.shards.store``), or keeps them in an
output folder. The encoding is the record-mode sinks' (``io.sinks``), so the joined file is the
one record mode writes. ``header`` goes both ways: the job's CSV column names or Parquet Arrow
IPC schema bytes (None for JSONL or a part with no rows), passed to every later shard so a row
that does not fit fails alone. Per format: docs/sharded.md, "Output formats".
"""

from __future__ import annotations

import csv
import io
import os
from typing import Any, BinaryIO

from parainfer.errors import UsageError
from parainfer.io import digest
from parainfer.io.safe_files import open_file
from parainfer.io.sinks import CsvSink, JsonlSink, Sink, infer_schema, rows_table

PART_FORMATS = (".jsonl", ".csv", ".parquet")


def output_format(output: str) -> str:
    """The part format of an output path: ".jsonl", ".csv" or ".parquet" (".ndjson" is JSONL).
    A folder output (``DIR/``) takes its name's extension when it is ``.csv`` or ``.parquet``
    (``out.parquet/``, as Spark names its part folders), else JSONL (``runs.v2/`` too). Raises
    UsageError for a file with another extension."""
    ext = os.path.splitext(output.rstrip("/"))[1].lower()
    if ext in (".csv", ".parquet"):
        return ext
    if ext in (".jsonl", ".ndjson") or output.endswith("/") or os.path.isdir(output):
        return ".jsonl"
    raise UsageError(f"output {output!r}: sharded mode writes {', '.join(PART_FORMATS)} (or a folder), not {ext!r}")


def csv_header_line(header: list[str]) -> bytes:
    """The header line ``CsvSink`` writes for ``header`` (csv module, \\r\\n line end)."""
    buf = io.StringIO(newline="")
    csv.writer(buf).writerow(header)
    return buf.getvalue().encode("utf-8")


class CsvPartSink(CsvSink):
    """``CsvSink`` under a given header (the job's) or its first row's; the header line is
    written only when ``with_header`` (a part kept in a folder)."""

    def __init__(self, path: str, stream: BinaryIO, id_column: str, text_column: str,
                 header: list[str] | None, with_header: bool) -> None:
        super().__init__(path, stream, id_column, text_column)
        self._header_due = with_header
        if header:
            self._header, self._known = list(header), set(header)

    @property
    def header(self) -> list[str] | None:
        return list(self._header) if self._header else None


class ParquetPartSink(Sink):
    """A Parquet part: rows converted to Arrow on ``write_rows`` (ValueError for a row that does
    not fit the schema, so it can fail alone), written in row groups of ``row_group_size``;
    ``close`` writes the footer. ``digest``/``bytes_written`` are the file's after ``close``."""

    def __init__(self, path: str, stream: BinaryIO, id_column: str, text_column: str,
                 schema: bytes | None, row_group_size: int = 10_000) -> None:
        super().__init__(path, stream, id_column, text_column)
        import pyarrow as pa

        self.row_group_size = row_group_size
        self._schema = pa.ipc.read_schema(pa.py_buffer(schema)) if schema else None
        self._tables: list[Any] = []
        self._held = 0
        self._writer: Any = None

    def _write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if self._schema is None:
            self._schema = infer_schema(rows)
        table = rows_table(rows, self._schema)
        self._tables.append(table)
        self._held += table.num_rows
        if self._held >= self.row_group_size:
            self._spill()

    def _spill(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._tables:
            return
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._stream, self._schema)
        self._writer.write_table(pa.concat_tables(self._tables).combine_chunks(), row_group_size=self.row_group_size)
        self._tables, self._held = [], 0

    @property
    def header(self) -> bytes | None:
        return self._schema.serialize().to_pybytes() if self._schema is not None else None

    def flush(self) -> None:
        """Parts are made durable once, by ``close``."""

    def close(self) -> None:
        """Write the held rows and the footer (no rows: an empty file), fsync, hash the file."""
        if self._stream.closed:
            return
        self._spill()
        if self._writer is not None:
            self._writer.close()
        self._stream.flush()
        os.fsync(self._stream.fileno())
        self._stream.close()
        self.bytes_written = os.path.getsize(self.path)
        self.digest = digest.prefix_digest(self.path, self.bytes_written)


def open_part(path: str, fmt: str, id_column: str, text_column: str, header: Any = None,
              with_header: bool = False) -> Sink:
    """Create the part file ``path`` in format ``fmt`` (".jsonl", ".csv", ".parquet"); see the
    module doc for ``header`` and ``with_header``. The sink has ``write_rows``, ``close``,
    ``bytes_written``, ``digest`` (after ``close``) and ``header`` (None for JSONL).
    Raises UsageError for another format, or when ``path`` is a link or not a regular file
    (it is never opened through a link: ``io.safe_files``)."""
    stream = open_file(path, "wb", "shard part")
    if fmt == ".jsonl":
        sink: Sink = JsonlSink(path, stream, id_column, text_column)
        sink.header = None  # type: ignore[attr-defined]
        return sink
    if fmt == ".csv":
        return CsvPartSink(path, stream, id_column, text_column, header, with_header)
    if fmt == ".parquet":
        return ParquetPartSink(path, stream, id_column, text_column, header)
    stream.close()
    raise UsageError(f"part format {fmt!r} is not one of {', '.join(PART_FORMATS)}")
