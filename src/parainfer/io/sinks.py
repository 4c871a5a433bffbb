"""Sinks: write result rows (already in input order) to JSONL, CSV or Parquet, and the errors file.

A sink owns the output encoding and durability: `write_rows` appends, `flush` makes what was
written durable (fsync), `close` finishes the file. `ErrorSink` is the quarantine: one JSONL
row per failed record, created only when the first error arrives.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
from typing import Any, BinaryIO, Iterator

import orjson

from parainfer.errors import UsageError
from parainfer.io import digest
from parainfer.io.safe_files import check_regular_or_absent, open_file
from parainfer.records import RecordError

FORMATS = (".jsonl", ".ndjson", ".csv", ".parquet")
STDOUT = "-"
EMBEDDING_COLUMN = "embedding"  # written as list<float32> in Parquet


def _json_default(value: Any) -> Any:
    """Make numpy scalars/arrays (anything with .tolist()) and dates JSON-serializable."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"cannot write a {type(value).__name__} ({value!r:.60}) as JSON; "
                    "expected str, number, bool, None, list, dict or a numpy value")


_ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def dumps_bytes(value: Any) -> bytes:
    """Compact UTF-8 JSON via orjson; numpy arrays/scalars written natively (float32 arrays
    in their shortest float32 form, about 13x faster than json + tolist for embeddings)."""
    try:
        return orjson.dumps(value, option=_ORJSON_OPTIONS, default=_json_default)
    except orjson.JSONEncodeError as e:
        if "64-bit" not in str(e):
            raise TypeError(str(e)) from None
        # orjson stops at 64-bit integers; the standard library writes any size.
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_json_default).encode("utf-8")


def dumps(value: Any) -> str:
    """Compact JSON text, non-ASCII kept as is, numpy values converted."""
    return dumps_bytes(value).decode("utf-8")


class Sink:
    """An output file (or stdout) that takes rows in order.

    Each row is a flat dict: id, text, the other input columns, then result columns (label,
    score, embedding ...). The id and text columns are put first whatever the dict order.
    Use as a context manager, or call `close()`.

    Attributes:
        path: the output path, or "-" for stdout.
        rows_written: rows accepted by `write_rows` so far.
        bytes_written: bytes written to the file so far (Parquet: row groups handed to the file).
        digest: running SHA-256 of the bytes written so far (``io.digest``; the checkpoint
            stores it so that a resume can verify the committed prefix).
    """

    def __init__(self, path: str, stream: BinaryIO, id_column: str, text_column: str) -> None:
        self.path, self._stream = path, stream
        self._first = (id_column, text_column)
        self.rows_written = self.bytes_written = 0
        self.digest = digest.new()

    def final_digest(self) -> str:
        """Hex SHA-256 of the finished file (after ``close``)."""
        return self.digest.hexdigest()

    def write_rows(self, rows: list[dict[str, Any]]) -> None:
        """Append rows (already in output order). Raises ValueError/TypeError for a value the
        format cannot hold (e.g. a CSV row with a column the header lacks)."""
        rows = [self._ordered(row) for row in rows]
        self._write(rows)
        self.rows_written += len(rows)

    def flush(self) -> None:
        """Make everything written so far durable: flush, then fsync (not for stdout). Raises
        OSError naming the file when that fails (a full disk)."""
        with _named(self.path):
            self._stream.flush()
            if self.path != STDOUT:
                os.fsync(self._stream.fileno())

    def close(self) -> None:
        """Flush and finish the file (stdout is flushed, not closed). Safe to call twice."""
        if self._stream.closed:
            return
        self.flush()
        if self.path != STDOUT:
            self._stream.close()

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ordered(self, row: dict[str, Any]) -> dict[str, Any]:
        return ordered_row(row, self._first)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def _put(self, data: bytes) -> None:
        with _named(self.path):
            self._stream.write(data)
        self.digest.update(data)
        self.bytes_written += len(data)


def ordered_row(row: dict[str, Any], first: tuple[str, str]) -> dict[str, Any]:
    """``row`` with the columns named in ``first`` (id, text) moved to the front, if present."""
    keys = [k for k in first if k in row]
    it = iter(row)
    if all(next(it) == k for k in keys):  # the common case: already id, text, ...
        return row
    return {**{k: row[k] for k in keys}, **row}


def unwritable_reason(error: Exception) -> str:
    """The errors-file reason of an output row the output format cannot hold (at most 300 characters)."""
    return f"output row cannot be written: {error}"[:300]


def write_rows_each(sink: "Sink", rows: list[dict[str, Any]], where: list[tuple[int, int]],
                    id_column: str) -> list[RecordError]:
    """Write ``rows``; when the format cannot hold one (a CSV row with a column the header lacks,
    a value JSON cannot encode: each sink's ``write_rows`` raises before writing anything), write
    them one by one instead. ``where``: (seq, input line) of each row. Returns a RecordError
    (no text) for each row that could not be written; the rest are written, in order."""
    try:
        sink.write_rows(rows)
        return []
    except (ValueError, TypeError):
        pass
    failed = []
    for (seq, line), row in zip(where, rows):
        try:
            sink.write_rows([row])
        except (ValueError, TypeError) as e:
            failed.append(RecordError(seq, line, row.get(id_column), unwritable_reason(e)))
    return failed


def encode_jsonl_row(row: dict[str, Any], first: tuple[str, str]) -> bytes:
    """One output line of a JSONL sink whose id and text columns are ``first``: the exact bytes
    ``JsonlSink.write_rows([row])`` writes (workers encode rows with it, ``executors.base.RowInfo``).
    Raises TypeError for a value JSON cannot hold."""
    return dumps_bytes(ordered_row(row, first)) + b"\n"


class JsonlSink(Sink):
    """One compact JSON object per line, UTF-8."""

    def _write(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._put(b"".join(dumps_bytes(row) + b"\n" for row in rows))

    def write_encoded(self, data: bytes, rows: int) -> None:
        """Append ``rows`` lines already encoded by ``encode_jsonl_row`` (in output order)."""
        if data:
            self._put(data)
        self.rows_written += rows


class CsvSink(Sink):
    """Header from the first row's keys; lists and dicts as JSON strings; None as empty."""

    _header: list[str] = []
    _header_due: bool | None = None  # write the header line first; None: when the header is not set yet

    def _write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        buf = io.StringIO(newline="")
        writer = csv.writer(buf)
        header = self._header or list(rows[0])
        known = self._known if self._header else set(header)
        if self._header_due or (self._header_due is None and not self._header):
            writer.writerow(header)
        for row in rows:  # checked before anything changes: a failed call writes nothing
            if extra := row.keys() - known:
                raise ValueError(f"row has columns {sorted(extra)} not in the CSV header "
                                 f"{header} (taken from the first row)")
            writer.writerow([_csv_cell(row.get(k)) for k in header])
        data = buf.getvalue().encode("utf-8")
        self._header, self._known, self._header_due = header, known, False
        self._put(data)


@contextlib.contextmanager
def _named(path: str) -> Iterator[None]:
    """Re-raise an OSError without a file name (a failed write or flush) as one naming ``path``."""
    try:
        yield
    except OSError as e:
        if e.filename or e.errno is None:
            raise
        raise OSError(e.errno, e.strerror, path) from None


def _csv_cell(value: Any) -> Any:
    if hasattr(value, "tolist"):
        value = value.tolist()
    return dumps(value) if isinstance(value, (list, dict)) else value


class ParquetSink(Sink):
    """Rows converted to Arrow as they are written (``rows_table``: a row that does not fit the
    schema raises ValueError, so it fails alone) and written as row groups of ``row_group_size``
    rows (when that many are held, or on flush). Schema: ``infer_schema`` of the first rows."""

    def __init__(self, path: str, stream: BinaryIO, id_column: str, text_column: str,
                 row_group_size: int) -> None:
        super().__init__(path, stream, id_column, text_column)
        self.row_group_size, self._tables, self._held = row_group_size, [], 0
        self._schema: Any = None
        self._writer: Any = None

    def _write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if self._schema is None:
            self._schema = infer_schema(rows)
        self._tables.append(rows_table(rows, self._schema))
        self._held += len(rows)
        if self._held >= self.row_group_size:
            import pyarrow as pa

            whole = pa.concat_tables(self._tables)
            while whole.num_rows >= self.row_group_size:
                self._write_group(whole.slice(0, self.row_group_size))
                whole = whole.slice(self.row_group_size)
            self._tables, self._held = [whole], whole.num_rows

    def _write_group(self, table: Any) -> None:
        import pyarrow.parquet as pq

        if self._writer is None:
            self._writer = pq.ParquetWriter(self._stream, self._schema)
        self._writer.write_table(table.combine_chunks(), row_group_size=table.num_rows)
        self.bytes_written = self._stream.tell()

    def flush(self) -> None:
        """Write the buffered rows as a row group, then flush and fsync the file."""
        if self._held:
            import pyarrow as pa

            self._write_group(pa.concat_tables(self._tables))
            self._tables, self._held = [], 0
        super().flush()

    def close(self) -> None:
        """Write the buffered rows and the Parquet footer; an empty output gets an empty table."""
        if self._stream.closed:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.flush()
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._stream, pa.schema([]))
        self._writer.close()  # writes the footer (and closes the stream, pyarrow >= 14)
        self._stream.close()
        self.bytes_written = os.path.getsize(self.path)
        fd = os.open(self.path, os.O_RDWR)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def infer_schema(rows: list[dict[str, Any]]) -> Any:
    """The Parquet schema of an output whose first rows are ``rows`` (non-empty): the first
    row's columns, in its order (a later row with another column fails alone, as in CSV); each
    column's type inferred from all of ``rows`` (``embedding`` as list<float32>), or, when
    they mix types Arrow cannot hold in one column (a string id and a line-number id), the type
    of its first non-null value, so that only the rows that differ fail.

    Raises:
        ValueError: a value of the first row Arrow cannot store at all.
    """
    import pyarrow as pa

    try:
        schema = pa.Table.from_pylist(rows).schema  # the first row's keys, every row's values
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        fields = []
        for name in rows[0]:
            values = [row.get(name) for row in rows]
            try:
                kind = pa.array(values).type
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                first = next(v for v in values if v is not None)
                try:
                    kind = pa.array([first]).type
                except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
                    raise ValueError(f"column {name!r}: Parquet cannot store a {type(first).__name__} "
                                     f"({first!r:.60}): {e}") from None
            fields.append(pa.field(name, kind))
        schema = pa.schema(fields)
    if EMBEDDING_COLUMN in schema.names:
        i = schema.get_field_index(EMBEDDING_COLUMN)
        if pa.types.is_list(schema.field(i).type) or pa.types.is_null(schema.field(i).type):
            schema = schema.set(i, pa.field(EMBEDDING_COLUMN, pa.list_(pa.float32())))
    return schema


def rows_table(rows: list[dict[str, Any]], schema: Any) -> Any:
    """Output rows (non-empty) as a ``pyarrow.Table`` under ``schema`` (``infer_schema`` of the
    output's first rows). Record mode's and sharded mode's Parquet sinks convert every row
    with it as it is written, so a row that does not fit fails alone in both.

    Raises:
        ValueError: a row with a column the schema lacks, or a value that does not fit its
            column; the message names the column, its Parquet type and the value's type.
    """
    import pyarrow as pa

    if extra := set().union(*rows) - set(schema.names):
        raise ValueError(f"rows have columns {sorted(extra)} not in the Parquet schema "
                         f"{schema.names} (taken from the first rows)")
    try:
        return pa.Table.from_pylist(rows, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
        raise ValueError(_misfit(rows, schema) or f"rows do not fit the Parquet schema taken from the first rows "
                         f"({', '.join(f'{f.name}: {f.type}' for f in schema)}): {e}") from e


def _misfit(rows: list[dict[str, Any]], schema: Any) -> str | None:
    """Why the first value of ``rows`` that does not fit ``schema`` does not (None: none found)."""
    import pyarrow as pa

    for row in rows:
        for field in schema:
            value = row.get(field.name)
            try:
                pa.array([value], type=field.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
                return (f"column {field.name!r} is {field.type} in the Parquet schema (taken from the first rows) "
                        f"but this row's value is {type(value).__name__} {value!r:.60}; a Parquet column holds one "
                        "type: give the column values of one type (rows without an id get their line number, an "
                        "int), or write JSONL or CSV")
    return None


def open_sink(path: str, id_column: str = "id", text_column: str = "text",
              row_group_size: int = 10_000) -> Sink:
    """Create (or overwrite) the output file; the format comes from the extension.

    Args:
        path: a `.jsonl`/`.ndjson`, `.csv` or `.parquet` file, or "-" for JSONL on stdout.
        id_column, text_column: these columns are written first in every row.
        row_group_size: Parquet only, the most rows per row group (rows are buffered until
            the group is full or `flush()` is called).

    Returns:
        A `Sink` with `write_rows(rows)`, `flush()`, `close()`, `rows_written`, `bytes_written`.

    Raises:
        UsageError: the extension is not one of FORMATS, the path is a directory, or its
            folder does not exist.
    """
    if path == STDOUT:
        return JsonlSink(path, sys.stdout.buffer, id_column, text_column)
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise UsageError(f"output {path!r} has unknown extension {ext or '(none)'!r}; "
                         f"accepted: {', '.join(FORMATS)}, or '-' for JSONL on stdout")
    stream = _create(path, "output")
    if ext == ".parquet":
        return ParquetSink(path, stream, id_column, text_column, row_group_size)
    return (CsvSink if ext == ".csv" else JsonlSink)(path, stream, id_column, text_column)


def _create(path: str, what: str, follow: bool = True) -> BinaryIO:
    """Create (or cut) ``path`` for writing. ``follow``: False for a file parainfer keeps next to
    the output (the errors file): never opened through a link (``io.safe_files.open_file``);
    the output itself is the user's choice and is followed."""
    if os.path.isdir(path) and follow:
        raise UsageError(f"{what} {path!r} is a directory; expected a file path")
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise UsageError(f"{what} folder {folder!r} does not exist; create it or choose "
                         "another path")
    return open(path, "wb") if follow else open_file(path, "wb", what)  # type: ignore[return-value]


def default_errors_path(output_path: str) -> str:
    """Where the errors of an output go: "out.jsonl" -> "out.errors.jsonl" (always JSONL, next to
    the output); for stdout ("-") "parainfer.errors.jsonl" in the current folder."""
    if output_path == STDOUT:
        return "parainfer.errors.jsonl"
    return os.path.splitext(output_path)[0] + ".errors.jsonl"


class ErrorSink:
    """The quarantine file: one JSONL row {"line", "id", "reason", "text"} per RecordError.

    The file is created (overwriting an old one) only when the first error arrives, so a clean
    run leaves none; ``resume(offset)`` instead continues a checkpointed file. Attributes: path,
    count (errors written so far), offset (bytes in the file so far).
    """

    def __init__(self, path: str) -> None:
        self.path, self.count, self._stream = path, 0, None
        self.digest = digest.new()  # running SHA-256 of the file's bytes (see io.digest)

    @property
    def offset(self) -> int:
        """Bytes in the file so far (0 before the first error)."""
        return self._stream.tell() if self._stream is not None else 0

    def resume(self, offset: int, expected_digest: str | None = None) -> None:
        """Continue a checkpointed errors file: cut it back to ``offset`` bytes (its committed
        length) and append after that; offset 0 deletes a stale file (the caller has checked
        that it is parainfer's). Raises UsageError when the file is shorter than ``offset`` or its
        first ``offset`` bytes do not have ``expected_digest`` (it was changed since the
        checkpoint), or when it is a link or not a regular file (``io.safe_files``)."""
        if offset == 0:
            if check_regular_or_absent(self.path, "errors file"):
                os.remove(self.path)
            return
        check_regular_or_absent(self.path, "errors file")
        self.digest = digest.verify_prefix(self.path, offset, expected_digest, "errors file")
        self._stream = open_file(self.path, "r+b", "errors file")  # type: ignore[assignment]
        self._stream.truncate(offset)
        self._stream.seek(offset)

    def write(self, errs: list[RecordError]) -> None:
        """Append the errors, creating the file on the first one. Raises UsageError when the
        file cannot be created (folder missing, the path is a directory, a link or not a
        regular file: it is never opened through a link)."""
        if not errs:
            return
        if self._stream is None:
            self._stream = _create(self.path, "errors file", follow=False)
        rows = ({"line": e.line, "id": e.id, "reason": e.reason, "text": e.text} for e in errs)
        data = "".join(dumps(row) + "\n" for row in rows).encode("utf-8")
        with _named(self.path):
            self._stream.write(data)
        self.digest.update(data)
        self.count += len(errs)

    def flush(self) -> None:
        """Flush and fsync the errors written so far (nothing to do before the first one)."""
        if self._stream is not None and not self._stream.closed:
            with _named(self.path):
                self._stream.flush()
                os.fsync(self._stream.fileno())

    def close(self) -> None:
        """Flush and close the file, if one was created."""
        if self._stream is not None and not self._stream.closed:
            self.flush()
            self._stream.close()

    def __enter__(self) -> ErrorSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
