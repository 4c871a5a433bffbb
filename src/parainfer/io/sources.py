"""Sources: stream the input file's rows as Records (or RecordErrors), in input order.

A source owns reading and validating input: one format reader per file type yields
(line number, row dict or fault reason); `Source` numbers the rows (seq) and turns each into a
`Record` or, when the row is unusable, a `RecordError` for the quarantine. Nothing is read
ahead: memory stays flat whatever the input size.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import itertools
import json
import math
import os
import re
import sys
from typing import Any, BinaryIO, Callable, Iterable, Iterator

import orjson

from parainfer.errors import UsageError
from parainfer.io.input_checks import check_first_line as _check_first_line
from parainfer.io.input_checks import check_id_column as _check_id_column
from parainfer.io.input_checks import check_text_file as _check_text_file
from parainfer.io.input_checks import no_json_constant as _no_constant
from parainfer.io.record_check import MAX_DEPTH, bad_string, check_row, may_be_deep
from parainfer.records import Record, RecordError

FORMATS = (".jsonl", ".ndjson", ".csv", ".parquet", ".txt")
STDIN = "-"
_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number",
               bool: "boolean", type(None): "null"}

Row = dict[str, Any] | str  # a row's columns, or the reason it could not be read (a Fault)
Rows = Iterator[tuple[int, Row]]  # (1-based line or row number, row)


class Fault(str):
    """Why a row cannot be used: a reader yields it in the row's place (a ``str``, the reason).

    Attributes:
        row: what of the row's columns could be read anyway (a JSONL line read again without
            the strict checks, a CSV row's fields, a Parquet row's readable columns, a TXT
            line's number), else None: where the errors file takes the row's id from
            (``fault_id``).
    """

    row: dict[str, Any] | None = None


def fault(reason: str, row: dict[str, Any] | None = None) -> Fault:
    """A ``Fault`` with ``reason`` and the readable columns ``row`` (None: none)."""
    out = Fault(reason)
    out.row = row
    return out


def fault_id(row: str, id_column: str, fallback: Any) -> Any:
    """The id of an unusable row for its errors-file entry: the ``id_column`` value of a
    ``Fault``'s readable columns when it can be written (a string of valid Unicode, a finite
    number, a bool); ``fallback`` when those columns have no id (as ``to_record`` numbers such
    rows, by line); None when nothing of the row could be read or its id is itself unreadable."""
    cols = getattr(row, "row", None)
    if cols is None:
        return None
    value = cols.get(id_column)
    if value is None:
        return fallback
    if isinstance(value, str):
        return None if bad_string(value) else value
    if isinstance(value, (bool, int)) or (isinstance(value, float) and math.isfinite(value)):
        return value
    return None


def unusable(seq: int, line: int, row: str, id_column: str) -> RecordError:
    """The RecordError of a row a reader could not use (``row``: the reason, a ``Fault``), with
    the row's id where it could be read (``fault_id``; no id column: the line number)."""
    return RecordError(seq, line, fault_id(row, id_column, line), str(row))


class Source:
    """An input: iterate it for `Record | RecordError` in input order, seq = 0, 1, 2, ...

    Every input row gets a seq, failing rows included. A file source can be iterated again
    (it re-reads the file); stdin can be iterated once.

    Attributes:
        path: the input path, or "-" for stdin.
        columns: the input's column names; None until known (JSONL: after the first object row).
    """

    def __init__(self, path: str, reader: Callable[[], Rows], text_column: str, id_column: str,
                 columns: list[str] | None = None, allow_messages: bool = False) -> None:
        self.path, self.columns = path, columns
        self.text_column, self.id_column = text_column, id_column
        self.allow_messages = allow_messages
        self._reader, self._fingerprint = reader, None
        self.jsonl_file = False  # a JSONL file: iterate it with the fused fast path (_jsonl_records)

    def __iter__(self) -> Iterator[Record | RecordError]:
        if self.jsonl_file:
            yield from self._jsonl_records()
            return
        for seq, (line, row) in enumerate(self._reader()):
            yield self._item(seq, line, row)

    def _item(self, seq: int, line: int, row: Row) -> Record | RecordError:
        if isinstance(row, str):
            return unusable(seq, line, row, self.id_column)
        if self.columns is None:
            self.columns = list(row)
        try:
            return to_record(seq, line, row, self.text_column, self.id_column, self.allow_messages)
        except Exception as e:  # noqa: BLE001 - no record stops a job: it is quarantined
            return RecordError(seq, line, None, f"record could not be read: {type(e).__name__}: {e}"[:300])

    def _jsonl_records(self) -> Iterator[Record | RecordError]:
        """The records of a JSONL file, as ``_jsonl_rows`` + ``to_record`` make them, with the
        usual line (an object with a non-blank string text, no 19-digit run, not deep) made in
        one step, without the per-row generator layers (the driver reads every record in record
        mode); every other line takes the general path, so the results are the same."""
        tc, ic, deep, seq = self.text_column, self.id_column, _DEEP_BYTES, 0
        with open(self.path, "rb") as f:
            for line, raw in enumerate(f, 1):
                try:
                    obj = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    obj = None
                if (type(obj) is dict and type(text := obj.get(tc)) is str and text.strip()
                        and not (len(raw) > deep and may_be_deep(raw)) and not _may_hold_big_int(raw)):
                    if self.columns is None:
                        self.columns = list(obj)
                    rid = obj.get(ic)
                    yield Record(seq, line if rid is None else rid, text,
                                 {k: v for k, v in obj.items() if k != tc and k != ic}, line)
                    seq += 1
                    continue
                for _, row in _jsonl_rows((raw,), start=line):  # the general path (none for a blank line)
                    yield self._item(seq, line, row)
                    seq += 1

    def fingerprint(self) -> str | None:
        """Return "sha256:<hex digest>:<size in bytes>" of the input file, None for stdin.

        The file is hashed in 1 MiB chunks on the first call (never loaded whole) and cached.
        A checkpoint compares it to refuse resuming onto a changed input.
        """
        if self.path == STDIN:
            return None
        if self._fingerprint is None:
            digest, size = hashlib.sha256(), 0
            with open(self.path, "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
            self._fingerprint = f"sha256:{digest.hexdigest()}:{size}"
        return self._fingerprint


def open_source(path: str, text_column: str = "text", id_column: str = "id", allow_messages: bool = False) -> Source:
    """Open an input file for streaming; the format comes from the extension.

    Args:
        path: a `.jsonl`/`.ndjson` file (one JSON object per line; blank lines are skipped),
            `.csv` (header row first), `.parquet`, `.txt` (one text per line, id = the 1-based
            line number, column "text"; nothing skipped), or "-" for JSONL on stdin.
        text_column: the column holding the text the model reads.
        id_column: the column holding the row id. A row without it (or with a null id) gets
            the 1-based line number (row number for Parquet) as its id.
        allow_messages: the text column may also hold a chat conversation, OpenAI style: a list
            of ``{"role": "system"|"user"|"assistant", "content": str}`` (``--task generate``;
            JSONL and Parquet). It is checked here (``check_messages``) and passed on as the list.

    Returns:
        A `Source` yielding one `Record` per usable row, with `extra` = the other columns in
        input order, or a `RecordError` (1-based `line`, and a reason naming the bad value) for
        a row that is not valid UTF-8, not valid JSON, not a JSON object, lacks the text column,
        or whose text is null, not a string, or empty/whitespace only. CSV lines count the
        header as line 1; a row spanning several lines gets the line where it starts.

    Raises:
        UsageError: the file is missing or a directory, the extension is not one of FORMATS,
            or a CSV/Parquet file (or the first JSON object of a JSONL file) is unreadable or has
            no `text_column` (the message lists the columns found).
    """
    if path == STDIN:
        return Source(path, lambda: _stdin_rows(sys.stdin.buffer), text_column, id_column,
                      allow_messages=allow_messages)
    if not os.path.exists(path):
        raise UsageError(f"input file {path!r} does not exist; expected a file with extension "
                         f"{', '.join(FORMATS)}, or '-' for JSONL on stdin")
    if os.path.isdir(path):
        raise UsageError(f"input {path!r} is a directory; expected a file with extension "
                         f"{', '.join(FORMATS)}")
    ext = os.path.splitext(path)[1].lower()
    if ext in (".jsonl", ".ndjson", ".csv", ".txt"):
        _check_text_file(path)
    if ext in (".jsonl", ".ndjson"):
        _check_first_jsonl_row(path, text_column, id_column)
        source = Source(path, lambda: _opened(path, _jsonl_rows), text_column, id_column,
                        allow_messages=allow_messages)
        source.jsonl_file = True
        return source
    if ext == ".txt":
        return Source(path, lambda: _opened(path, _txt_rows), "text", "id", ["id", "text"])
    if ext == ".csv":
        header = _csv_header(path, text_column)
        _check_id_column(path, id_column, header)
        return Source(path, lambda: _opened(path, _csv_rows), text_column, id_column, header)
    if ext == ".parquet":
        columns = _parquet_columns(path, text_column)
        _check_id_column(path, id_column, columns)
        return Source(path, lambda: _opened(path, _parquet_rows), text_column, id_column, columns, allow_messages)
    raise UsageError(f"input {path!r} has unknown extension {ext or '(none)'!r}; "
                     f"accepted: {', '.join(FORMATS)}, or '-' for JSONL on stdin")


CHAT_ROLES = ("system", "user", "assistant")


def check_messages(messages: list[Any]) -> str | None:
    """Why ``messages`` is not a usable chat conversation, or None when it is: a non-empty list
    of objects, each with ``role`` in CHAT_ROLES and a string ``content``."""
    if not messages:
        return "empty messages list; expected at least one {\"role\": ..., \"content\": ...} object"
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            return f"messages[{i}] is {type(msg).__name__} {msg!r:.40}, expected an object with role and content"
        if msg.get("role") not in CHAT_ROLES:
            return f"messages[{i}] has role {msg.get('role')!r}; accepted: {', '.join(CHAT_ROLES)}"
        if not isinstance(msg.get("content"), str):
            return f"messages[{i}] has content {msg.get('content')!r:.40}, expected a string"
    return None


def to_record(seq: int, line: int, row: dict[str, Any], text_column: str,
              id_column: str, allow_messages: bool = False) -> Record | RecordError:
    """Turn one row dict into a Record, or a RecordError saying what is wrong with its text
    (with ``allow_messages``, a list in the text column must pass ``check_messages``)."""
    rid = row.get(id_column)
    rid = line if rid is None else rid
    text = row.get(text_column)
    if text_column not in row:
        found = ", ".join(map(repr, row)) or "none"
        reason = f"missing text column {text_column!r} (columns found: {found})"
    elif text is None:
        reason = f"null text in column {text_column!r}"
    elif allow_messages and isinstance(text, list):
        reason = check_messages(text)
        if reason is None:
            extra = {k: v for k, v in row.items() if k != text_column and k != id_column}
            return Record(seq, rid, text, extra, line)
        reason = f"bad chat messages in column {text_column!r}: {reason}"
    elif not isinstance(text, str):
        reason = (f"non-string text in column {text_column!r}: {type(text).__name__} "
                  f"{text!r:.60}, expected a string" + (" or a list of chat messages" if allow_messages else ""))
    elif not text.strip():
        reason = f"empty text in column {text_column!r}: {text!r:.60}"
    else:
        extra = {k: v for k, v in row.items() if k != text_column and k != id_column}
        return Record(seq, rid, text, extra, line)
    return RecordError(seq, line, rid, reason)


def _decode(raw: bytes, line: int) -> str:
    """Decode one line of UTF-8 (a BOM on line 1 is dropped); raises UnicodeDecodeError."""
    return raw.decode("utf-8-sig" if line == 1 else "utf-8").rstrip("\r\n")


def _bad_utf8(raw: bytes, err: UnicodeDecodeError) -> str:
    return f"invalid UTF-8: byte 0x{raw[err.start]:02x} at column {err.start + 1}"


def _check_first_jsonl_row(path: str, text_column: str, id_column: str = "id") -> None:
    """Raise UsageError when the first JSON object of a JSONL file lacks ``text_column`` (or a
    chosen ``id_column``): a misnamed column would otherwise fail every row, one by one, after
    the model has loaded. Later rows without it are per-record errors as usual."""
    with open(path, "rb") as f:
        for _, row in _jsonl_rows(f):
            if isinstance(row, dict):
                if text_column not in row:
                    raise UsageError(f"JSONL file {path!r} has no text column {text_column!r} in its first row; "
                                     f"columns found: {', '.join(map(repr, row)) or 'none'} (choose one with "
                                     f"the text column option)")
                _check_id_column(path, id_column, list(row))
                return


def _opened(path: str, rows: Callable[[BinaryIO], Rows]) -> Rows:
    """Open the file when iteration starts, close it when it ends."""
    with open(path, "rb") as f:
        yield from rows(f)


_DEEP_BYTES = 2 * MAX_DEPTH
# 19+ digits in a row: maybe an integer beyond 64 bits, which orjson would turn into a float.
_LONG_DIGITS = re.compile(rb"\d{19}")
_DIGITS = b"0123456789"


def _may_hold_big_int(raw: bytes) -> bool:
    """True when ``raw`` has a run of 19+ digits. Counting its digits first (``bytes.translate``,
    in C: ~0.26 us a line) skips the regex scan (~1.4 us) on the usual line with fewer than 19."""
    return len(raw) - len(raw.translate(None, _DIGITS)) >= 19 and _LONG_DIGITS.search(raw) is not None


def _stdin_rows(stream: BinaryIO) -> Rows:
    """JSONL from stdin: its first line is checked like a file's head (``check_first_line``)."""
    lines = iter(stream)
    first = next(lines, None)
    if first is not None:
        _check_first_line(first, "stdin")
        yield from _jsonl_rows(itertools.chain((first,), lines))


def _jsonl_rows(stream: Iterable[bytes], start: int = 1) -> Rows:
    deep = _DEEP_BYTES
    for line, raw in enumerate(stream, start):
        try:  # fast path: orjson parses the bytes and validates UTF-8 (and surrogates) in one go
            obj = orjson.loads(raw)
            if isinstance(obj, dict) and not _may_hold_big_int(raw):
                # Only a line of more than 2 x MAX_DEPTH bytes can nest deeper than MAX_DEPTH.
                if len(raw) > deep and may_be_deep(raw) and (reason := check_row(obj)):
                    yield line, fault(reason, obj)
                else:
                    yield line, obj
                continue
        except orjson.JSONDecodeError:
            pass  # the slow path below finds and names the exact fault (or keeps a big integer exact)
        try:
            s = _decode(raw, line)
        except UnicodeDecodeError as e:
            yield line, fault(_bad_utf8(raw, e), _lenient_object(raw))
            continue
        if not s.strip():
            continue
        try:
            obj = json.loads(s, parse_constant=_no_constant)
        except json.JSONDecodeError as e:
            where = e.msg.removesuffix(" at")  # "Invalid control character at"
            yield line, fault(f"line is not valid JSON ({where} at column {e.colno}): {s:.60}", _lenient_object(raw))
            continue
        except ValueError as e:
            yield line, fault(f"line is not valid JSON: {e}", _lenient_object(raw))
            continue
        except RecursionError:
            yield line, fault("line is not usable: a value is nested too deep to read")
            continue
        if isinstance(obj, dict):
            reason = check_row(obj)
            yield line, fault(reason, obj) if reason else obj
        else:
            kind = _JSON_TYPES.get(type(obj), type(obj).__name__)
            yield line, fault(f"line is a JSON {kind} ({s:.40}), expected an object {{...}}")


def _lenient_object(raw: bytes) -> dict[str, Any] | None:
    """A JSONL line that failed the strict reading, read without its checks (NaN, raw control
    characters and invalid UTF-8 let through, as lone surrogates), for the columns the errors
    file can still name; None when it is no JSON object even so."""
    try:
        obj = json.loads(raw.decode("utf-8", "surrogateescape").lstrip("\ufeff"), strict=False)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def _txt_rows(stream: BinaryIO | Iterable[bytes], start: int = 1) -> Rows:
    """TXT lines as rows, numbered from ``start`` (a shard's first line): id = the line number."""
    for line, raw in enumerate(stream, start):
        try:
            yield line, {"id": line, "text": _decode(raw, line)}
        except UnicodeDecodeError as e:
            yield line, fault(_bad_utf8(raw, e), {"id": line})


def _csv_lines(stream: BinaryIO) -> Iterator[str]:
    """Decode line by line; invalid bytes become lone surrogates, caught per row later."""
    for line, raw in enumerate(stream, 1):
        yield raw.decode("utf-8-sig" if line == 1 else "utf-8", "surrogateescape")


def _csv_reader(stream: BinaryIO) -> Any:
    csv.field_size_limit(2**31 - 1)
    return csv.reader(_csv_lines(stream))


def _csv_header(path: str, text_column: str) -> list[str]:
    with open(path, "rb") as f:
        header = next(_csv_reader(f), None)
    if not header:
        raise UsageError(f"CSV file {path!r} is empty; expected a header row naming the "
                         f"columns, one of them {text_column!r}")
    if text_column not in header:
        hint = next((f"; the header looks separated by {d!r}: parainfer reads comma-separated CSV (convert it, "
                     "or write JSONL or Parquet)" for d in (";", "\t", "|") if len(header) == 1 and d in header[0]), "")
        raise UsageError(f"CSV file {path!r} has no text column {text_column!r}; columns found: "
                         f"{', '.join(map(repr, header))} (choose one with the text column option){hint}")
    return header


def _csv_rows(stream: BinaryIO) -> Rows:
    reader = _csv_reader(stream)
    header, end = next(reader), reader.line_num
    while True:
        start = end + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            end = reader.line_num
            yield start, fault(f"line is not valid CSV: {e}")
            continue
        end = reader.line_num
        if not fields:  # a blank line is not a row
            continue
        try:
            "".join(fields).encode("utf-8")
        except UnicodeEncodeError:
            yield start, fault("invalid UTF-8 in this row", dict(zip(header, fields)) if len(fields) == len(header)
                               else None)
            continue
        if len(fields) != len(header):  # which field is which is not known: no id
            yield start, fault(f"row has {len(fields)} fields but the header has {len(header)} "
                               f"({', '.join(header)})")
            continue
        yield start, dict(zip(header, fields))


def _parquet_columns(path: str, text_column: str) -> list[str]:
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ... for a bad file
        raise UsageError(f"input {path!r} is not a readable Parquet file: {e}") from e
    if text_column not in names:
        raise UsageError(f"Parquet file {path!r} has no text column {text_column!r}; columns "
                         f"found: {', '.join(map(repr, names))} (choose one with the text "
                         "column option)")
    return names


def _parquet_rows(stream: BinaryIO, batch_size: int = 4096) -> Rows:
    import pyarrow.parquet as pq

    line = 0
    for batch in pq.ParquetFile(stream).iter_batches(batch_size=batch_size):
        try:
            rows: list[Row] = batch.to_pylist()
        except Exception:  # noqa: BLE001 - one bad value (invalid UTF-8 ...): find the row, quarantine it
            rows = [_parquet_row(batch, i) for i in range(batch.num_rows)]
        for row in rows:
            line += 1
            yield line, row


def _parquet_row(batch: Any, i: int) -> Row:
    """Row ``i`` of a record batch, or the reason it cannot be read (with its readable columns)."""
    one = batch.slice(i, 1)
    try:
        return one.to_pylist()[0]
    except Exception as e:  # noqa: BLE001
        readable = {}
        for name, column in zip(one.schema.names, one.columns):
            with contextlib.suppress(Exception):  # the bad value's column is left out
                readable[name] = column.to_pylist()[0]
        return fault(f"row could not be read: {type(e).__name__}: {e}"[:300], readable)


def count_records(path: str) -> int | None:
    """Fast estimate of the number of input records for the progress bar (None if unknown)."""
    if path == "-":
        return None
    try:
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
        lines = 0
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                lines += chunk.count(b"\n")
        return max(0, lines - 1) if path.endswith(".csv") else lines
    except OSError:
        return None
