"""The OpenAI Batch API file format: reading request lines, writing result lines.

Input: one JSON object a line, ``{"custom_id", "method", "url", "body"}`` with ``url`` one of
``ENDPOINTS`` (``is_batch_file`` recognises a file by its first line; ``open_batch_source``
reads it). Output: one ``result_line`` per request, ``{"id", "custom_id", "response":
{"status_code", "request_id", "body"}, "error"}``. A malformed line (``malformed_reason``) goes to
the errors file and the job goes on; a well-formed request that cannot be served gets a result
line with status 400. Formats (OpenAI's, https://platform.openai.com/docs/guides/batch) and
rules: docs/batch.md, "`parainfer run BATCH.jsonl --output RESULTS.jsonl`".
"""

from __future__ import annotations

import os
import re
import uuid
from typing import Any, Iterator

from parainfer.errors import UsageError
from parainfer.io.sources import Source, _jsonl_rows, _opened, fault_id
from parainfer.records import Record, RecordError

BATCH_TASK = "openai-batch"
BATCH_FORMAT = "openai-batch"
ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
INPUT_FORMATS = ("auto", "records", BATCH_FORMAT)


def looks_like_batch_line(row: Any) -> bool:
    """True when ``row`` (a parsed JSON value) has the batch line's keys: custom_id, url, body."""
    return isinstance(row, dict) and {"custom_id", "url", "body"} <= row.keys()


def is_batch_file(path: str) -> bool:
    """True when the first JSON object of the .jsonl file ``path`` is a batch request line."""
    if path == "-" or os.path.splitext(path)[1].lower() not in (".jsonl", ".ndjson") or not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        for _, row in _jsonl_rows(f):
            return looks_like_batch_line(row)
    return False


# How much of a batch file ``urls_in`` reads: the endpoints named further on still work, their
# model then loads when its first line arrives (counted as execution, not start-up).
URL_SCAN_BYTES = 256 << 20
_URL = re.compile(rb'"url"\s*:\s*"((?:\\?/[A-Za-z0-9_.-]+){1,8})"')


def urls_in(path: str, limit: int = URL_SCAN_BYTES) -> set[str]:
    """The ENDPOINTS that the request lines of the batch file ``path`` name as ``url``, found
    by a byte search of its first ``limit`` bytes (no JSON parsing: a quoted ``"url"`` key
    inside a text is escaped, so it does not match), so that each worker loads the models its
    lines need at start-up. Raises OSError when the file cannot be read."""
    found: set[str] = set()
    with open(path, "rb") as f:
        data, read = b"", 0
        while read < limit and len(found) < len(ENDPOINTS):
            chunk = f.read(min(1 << 24, limit - read))
            if not chunk:
                break
            read += len(chunk)
            data = data[-256:] + chunk  # a key cut at the chunk's start is whole again
            found.update(u for m in _URL.finditer(data) if (u := m.group(1).replace(b"\\", b"").decode()) in ENDPOINTS)
    return found


def resolve_job_format(config: Any) -> Any:
    """``config`` for an OpenAI batch file (``input_format`` "openai-batch", or "auto" and the
    first line looks like one): task "openai-batch", id column "id", text column "body".
    Other inputs: ``config`` unchanged.

    Raises:
        UsageError: ``input_format`` is not one of INPUT_FORMATS, or "openai-batch" with a
            non-JSONL input, or a batch file with ``--task generate``/``embed`` options that
            would be silently ignored (``--model`` of another task).
    """
    fmt = getattr(config, "input_format", "auto")
    if fmt not in INPUT_FORMATS:
        raise UsageError(f"--format {fmt!r} is not known; accepted: {', '.join(INPUT_FORMATS)}")
    if fmt == "records" or (fmt == "auto" and not is_batch_file(config.input)):
        return config
    if os.path.splitext(config.input)[1].lower() not in (".jsonl", ".ndjson"):
        raise UsageError(f"--format openai-batch needs a .jsonl input; got {config.input!r}")
    if os.path.splitext(config.output)[1].lower() not in (".jsonl", ".ndjson") and config.output != "-":
        raise UsageError(f"an OpenAI batch job writes JSONL results; got output {config.output!r} (use .jsonl)")
    return config.model_copy(update={"task": BATCH_TASK, "id_column": "id", "text_column": "body",
                                     "generation": {}})


class BatchSource(Source):
    """The lines of a batch file as Records: ``id`` = custom_id, ``text`` = the request
    ``{"custom_id", "method", "url", "body"}``; malformed or duplicate lines as RecordErrors."""

    def __iter__(self) -> Iterator[Record | RecordError]:
        seen: dict[str, int] = {}
        for seq, (line, row) in enumerate(self._reader()):
            if isinstance(row, str):
                yield RecordError(seq, line, fault_id(row, "custom_id", None), str(row))
                continue
            reason = malformed_reason(row)
            cid = row.get("custom_id")
            if reason is None and cid in seen:
                reason = f"duplicate custom_id {cid!r} (first on line {seen[cid]}); custom_ids must be unique"
            if reason is not None:
                yield RecordError(seq, line, cid if isinstance(cid, str) else None, reason)
                continue
            seen[cid] = line
            request = {"custom_id": cid, "method": row.get("method"), "url": row.get("url"), "body": row["body"]}
            yield Record(seq, cid, request, {}, line)  # type: ignore[arg-type]


def malformed_reason(row: dict[str, Any]) -> str | None:
    """Why a batch line cannot be answered at all (it goes to the errors file), or None."""
    cid = row.get("custom_id")
    if not isinstance(cid, str) or not cid:
        return f"custom_id is {cid!r:.40}; expected a non-empty string"
    if not isinstance(row.get("body"), dict):
        return f"body of custom_id {cid!r} is {type(row.get('body')).__name__}; expected a JSON object"
    return None


def open_batch_source(path: str) -> BatchSource:
    """Open an OpenAI batch .jsonl file for streaming. Raises UsageError when it is missing."""
    if not os.path.isfile(path):
        raise UsageError(f"batch file {path!r} does not exist or is not a file; expected OpenAI batch JSONL")
    return BatchSource(path, lambda: _opened(path, _jsonl_rows), "body", "id", ["custom_id", "method", "url", "body"])


def result_line(custom_id: str, status: int, body: dict[str, Any]) -> dict[str, Any]:
    """One output line (OpenAI's batch output format) for a request answered with ``status``."""
    return {"id": f"batch_req_{uuid.uuid4().hex}", "custom_id": custom_id,
            "response": {"status_code": status, "request_id": f"req_{uuid.uuid4().hex}", "body": body},
            "error": None}
