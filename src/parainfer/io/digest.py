"""Digests of committed bytes: a resume is verified, not trusted.

Every sink feeds the bytes it writes into a running SHA-256 (``Sink.digest``, ``ErrorSink.digest``);
a checkpoint commit stores the hex digest of the committed prefix next to its length. A rerun
hashes the first B bytes of the file on disk and compares (``verify_prefix``); the hash object
it computed goes on taking the bytes written after the resume, so nothing is read twice.
SHA-256 (FIPS 180-4) runs at about 1-2 GB/s with the CPU's SHA extensions: checking a 1 GB
output costs about a second.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from parainfer.errors import UsageError

CHUNK = 1 << 20


def new() -> Any:
    """A fresh running digest (hashlib.sha256)."""
    return hashlib.sha256()


def prefix_digest(path: str, nbytes: int) -> Any:
    """The running digest of the first ``nbytes`` of ``path`` (fewer if the file is shorter)."""
    h = new()
    left = nbytes
    with open(path, "rb") as f:
        while left > 0:
            chunk = f.read(min(CHUNK, left))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
    return h


def verify_prefix(path: str, nbytes: int, expected: str | None, what: str) -> Any:
    """Check that the first ``nbytes`` of ``path`` are the committed ones.

    Args:
        path: the output or errors file.
        nbytes: its committed length B (from the manifest).
        expected: the committed hex digest, or None (a manifest of an older parainfer: not checked).
        what: "output" or "errors file", for the message.

    Returns:
        The running digest of those B bytes (for the sink to continue).

    Raises:
        UsageError: the file is shorter than B, or its first B bytes differ from the committed
            ones (it was edited, cut or written by another program since the checkpoint).
    """
    if not os.path.isfile(path):
        raise UsageError(f"{what} {path!r} is missing, but its checkpoint committed {nbytes:,} bytes of it; rerun "
                         "with --overwrite to start over")
    size = os.path.getsize(path)
    if size < nbytes:
        raise UsageError(f"{what} {path!r} has {size:,} bytes, fewer than the {nbytes:,} its checkpoint "
                         "committed: it was cut or changed since; rerun with --overwrite to start over")
    h = prefix_digest(path, nbytes)
    if expected is not None and h.hexdigest() != expected:
        raise UsageError(f"{what} {path!r} was changed since its checkpoint: its first {nbytes:,} committed bytes "
                         "no longer match the digest in the checkpoint; rerun with --overwrite to start over")
    return h


def mismatch(path: str, nbytes: int, expected: str | None = None, ranges: list[list[Any]] | None = None) -> str | None:
    """How the file at ``path`` differs from the whole file a checkpoint recorded, or None when it
    does not: ``nbytes`` long, with hex SHA-256 ``expected`` (None: not checked) and/or the byte
    ``ranges`` of ``ranges_match`` (None: not checked).

    Returns a phrase for a message: "it is missing", "it has A bytes, not the N ...", or, for a
    file of the right size, that its content differs (an edit that kept the size)."""
    if not os.path.isfile(path):
        return "it is missing"
    size = os.path.getsize(path)
    if size != nbytes:
        return f"it has {size:,} bytes, not the {nbytes:,} its checkpoint recorded"
    if (ranges is not None and not ranges_match(path, ranges)) or (expected and file_digest(path) != expected):
        return (f"it has the {nbytes:,} bytes its checkpoint recorded, but its content differs (another SHA-256 "
                "digest): it was edited in place")
    return None


def file_digest(path: str) -> str:
    """Hex SHA-256 of a whole file."""
    return prefix_digest(path, os.path.getsize(path)).hexdigest()


def ranges_match(path: str, ranges: list[list[Any]]) -> bool:
    """True when ``path`` is the concatenation of byte ranges of the given sizes and hex
    SHA-256 digests (``[[nbytes, hex], ...]`` in file order) and nothing more: how a sharded
    job's output is verified from its parts' digests (``io.shards.store``)."""
    if os.path.getsize(path) != sum(n for n, _ in ranges):
        return False
    with open(path, "rb") as f:
        for nbytes, expected in ranges:
            h, left = new(), nbytes
            while left > 0:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    return False
                h.update(chunk)
                left -= len(chunk)
            if h.hexdigest() != expected:
                return False
    return True
