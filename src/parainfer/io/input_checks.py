"""Checks of a whole input before any record is read: the encoding and line ends of a text
file, and that the columns the user named exist. Each raises UsageError (exit 2) with one line
naming the problem and what is accepted. ``io.sources`` calls them; readers of byte ranges
(shards) can call ``check_first_line`` on a shard's first line the same way.
"""

from __future__ import annotations

import codecs
from typing import Any

from parainfer.errors import UsageError


def no_json_constant(name: str) -> Any:
    """``json.loads(parse_constant=...)``: NaN, Infinity and -Infinity are refused (ValueError);
    RFC 8259 has no such numbers and they would otherwise be written as null without a word."""
    raise ValueError(f"{name} is not a JSON number (JSON has no NaN or Infinity; write null)")


_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32 (little-endian)"), (b"\x00\x00\xfe\xff", "UTF-32 (big-endian)"),
         (b"\xff\xfe", "UTF-16 (little-endian)"), (b"\xfe\xff", "UTF-16 (big-endian)"))


def check_first_line(raw: bytes, where: str = "the input") -> None:
    """Raise UsageError when the first line (or first 64 KiB) of a text input shows it is not
    UTF-8 text with LF (or CRLF) line ends: a UTF-16/32 byte-order mark, the NUL pattern of
    UTF-16/32 without a mark (a NUL byte at every second or fourth position: ASCII characters
    in 2 or 4 bytes, ``wide_encoding``), NUL bytes in a line that is not UTF-8 (a binary file),
    or CR-only line ends (classic Mac). A NUL byte alone is a character of valid UTF-8: such a
    file is read as UTF-8 (what a record holding it becomes: docs/fault-tolerance.md)."""
    for bom, name in _BOMS:
        if raw.startswith(bom):
            raise UsageError(f"{where} is encoded as {name} (it starts with that byte-order mark); parainfer "
                             "reads UTF-8 only: convert it, e.g. `iconv -f UTF-16 -t UTF-8 IN > OUT`")
    if b"\x00" in raw:
        wide = wide_encoding(raw)
        if wide is not None:
            raise UsageError(f"{where} looks encoded as {wide} without a byte-order mark (a NUL byte at every "
                             f"{'second' if wide.startswith('UTF-16') else 'fourth'} position of its first line); "
                             f"parainfer reads UTF-8 only: convert it, e.g. `iconv -f {wide} -t UTF-8 IN > OUT`")
        if not _utf8(raw):
            raise UsageError(f"{where} holds NUL bytes in a first line that is not UTF-8: it is a binary file or "
                             "text in another encoding; parainfer reads UTF-8 text only")
    if b"\r" in raw.rstrip(b"\r\n") and b"\n" not in raw:
        raise UsageError(f"{where} has CR-only line ends (old Mac style): it would read as one line; convert "
                         "them to LF, e.g. `tr '\\r' '\\n' < IN > OUT`")


def wide_encoding(raw: bytes) -> str | None:
    """"UTF-32LE", "UTF-32BE", "UTF-16LE" or "UTF-16BE" when the bytes ``raw`` (from the start
    of a file) have that encoding's NUL pattern: at each of the positions where ASCII text has
    a zero byte (1, 2, 3 mod 4 for UTF-32LE; 0, 1, 2 for UTF-32BE; odd or even ones for
    UTF-16LE / BE) at least half the bytes are NUL, at least two in all; else None. UTF-8 text
    with a NUL character here and there has no such pattern."""
    def zeros(step: int, offsets: tuple[int, ...]) -> bool:
        picked = [raw[o::step] for o in offsets]
        return (sum(p.count(0) for p in picked) >= 2
                and all(2 * p.count(0) >= len(p) for p in picked))

    for name, step, offsets in (("UTF-32LE", 4, (1, 2, 3)), ("UTF-32BE", 4, (0, 1, 2)),
                                ("UTF-16LE", 2, (1,)), ("UTF-16BE", 2, (0,))):
        if zeros(step, offsets):
            return name
    return None


def _utf8(raw: bytes) -> bool:
    """True when ``raw`` is valid UTF-8 (a character cut at its end, by a 64 KiB head, counts)."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(raw, final=False)
    except UnicodeDecodeError:
        return False
    return True


def check_text_file(path: str) -> None:
    """``check_first_line`` on the first 64 KiB of a text file (JSONL, CSV, TXT)."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    cut = head.find(b"\n")
    check_first_line(head if cut < 0 else head[:cut + 1], f"input {path!r}")


def check_id_column(path: str, id_column: str, columns: list[str]) -> None:
    """Raise UsageError when a chosen id column (anything but the default "id", which falls back
    to line numbers when absent) is not among the input's columns: a mistyped name must not
    silently number the records instead."""
    if id_column != "id" and id_column not in columns:
        raise UsageError(f"input {path!r} has no id column {id_column!r}; columns found: "
                         f"{', '.join(map(repr, columns)) or 'none'} (choose one with --id-column, or leave it "
                         "out to number the records by line)")
