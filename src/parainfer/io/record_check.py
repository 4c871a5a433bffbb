"""One check of every input row's values where they enter, whatever the source format.

A value that would crash the driver later (a tokenizer, a sink's JSON encoder) becomes an
errors-file row here instead: a string holding a lone UTF-16 surrogate (JSON's ``"\\ud800"``
escape, which no UTF-8 encoder accepts), or a value nested deeper than ``MAX_DEPTH`` levels
(orjson writes at most 255; Python's json recursion stops near 1,000). JSONL's own NaN and
Infinity check (RFC 8259 section 6) is in ``io.sources``. ``check_row(row)`` walks a row
without recursion; ``may_be_deep(raw)`` lets the JSONL fast path skip the walk on ordinary
lines (fewer than MAX_DEPTH brackets cannot nest deeper than MAX_DEPTH).
"""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 200  # levels of lists/objects inside a row (the row itself is level 0)


def may_be_deep(raw: bytes) -> bool:
    """True when a raw JSON line has enough brackets to nest past MAX_DEPTH (a line shorter than
    2 x MAX_DEPTH bytes cannot; longer ones get two C-speed counts)."""
    return len(raw) > 2 * MAX_DEPTH and raw.count(b"[") + raw.count(b"{") > MAX_DEPTH


def bad_string(s: str) -> bool:
    """True when ``s`` cannot be encoded as UTF-8 (a lone surrogate)."""
    if s.isascii():
        return False
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_row(row: dict[str, Any]) -> str | None:
    """Why ``row`` cannot be used, or None when every key and value is sound.

    Returns a reason naming the column: a lone surrogate in a string or key, or nesting deeper
    than MAX_DEPTH. Never raises, whatever the row holds.
    """
    for column, value in row.items():
        if isinstance(column, str) and bad_string(column):
            return f"column name {column!r:.40} holds a lone UTF-16 surrogate (not valid Unicode text)"
        reason = _check_value(value)
        if reason:
            return f"column {column!r:.40}: {reason}"
    return None


def _check_value(value: Any) -> str | None:
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, str):
            if bad_string(v):
                return f"string {v!r:.40} holds a lone UTF-16 surrogate (not valid Unicode text)"
        elif isinstance(v, (list, dict)):
            if depth > MAX_DEPTH:
                return f"value nested more than {MAX_DEPTH} levels deep; at most {MAX_DEPTH} accepted"
            if isinstance(v, dict):
                for k in v:
                    if isinstance(k, str) and bad_string(k):
                        return f"key {k!r:.40} holds a lone UTF-16 surrogate (not valid Unicode text)"
                items = v.values()
            else:
                items = v
            stack.extend((item, depth + 1) for item in items if isinstance(item, (str, list, dict)))
    return None
