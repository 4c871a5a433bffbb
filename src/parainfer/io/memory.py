"""In-memory input and output for jobs run from Python (``parainfer.predict``, ``parainfer.Pool``).

``memory_source(texts)`` turns a list of texts into a `Source` with the same per-record
validation as a file (a null, non-string or empty text becomes a `RecordError`).
``MemoryStore`` stands where a file job has its `Checkpoint`: it hands the driver a sink that
keeps the result rows in a list and an errors sink that keeps the `RecordError`s, and it has
nothing to commit or resume (the data lives and dies with the caller).
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from parainfer.io.sources import Source
from parainfer.records import RecordError

MEMORY = "<memory>"  # the JobConfig input/output of an in-memory job


def memory_source(texts: list[Any], text_column: str = "text", id_column: str = "id") -> Source:
    """A `Source` over ``texts``: record seq i holds ``texts[i]``, its id is i (0-based).

    Args:
        texts: the texts, in input order (anything else in the list fails per record, as a
            bad value in a file does).
        text_column, id_column: the names the rows use (they end up in the result rows).
    """
    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        for i, text in enumerate(texts):
            yield i + 1, {id_column: i, text_column: text}

    source = Source(MEMORY, rows, text_column, id_column, [id_column, text_column])
    source.total = len(texts)  # type: ignore[attr-defined]  # for the progress bar
    return source


class MemorySink:
    """Keeps the rows the merger releases (already in input order) in ``rows``."""

    path = MEMORY

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.rows_written = self.bytes_written = 0

    def write_rows(self, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)
        self.rows_written += len(rows)

    def flush(self) -> None:
        """Nothing to make durable."""

    def close(self) -> None:
        """Nothing to close."""

    def __enter__(self) -> MemorySink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MemoryErrors:
    """Keeps every `RecordError` the job reports, in ``errors`` (arrival order)."""

    path = MEMORY
    offset = 0

    def __init__(self) -> None:
        self.errors: list[RecordError] = []

    @property
    def count(self) -> int:
        return len(self.errors)

    def write(self, errs: Iterable[RecordError]) -> None:
        self.errors.extend(errs)

    def release(self, next_seq: int) -> None:
        """Nothing held back: errors are kept as they come."""

    def flush(self) -> None:
        """Nothing to make durable."""

    def close(self) -> None:
        """Nothing to close."""


class MemoryStore:
    """The driver's output side for an in-memory job: the `Checkpoint` interface, without a file.

    Attributes:
        sink: a MemorySink (result rows in input order, failed records left out).
        errors: a MemoryErrors (the failed records with their reasons).
        path: None (no checkpoint); finished, resumed_records, resumed_failed: never resumed.
    """

    path = None
    finished = False
    resumed_records = resumed_failed = 0

    def __init__(self) -> None:
        self.sink = MemorySink()
        self.errors = MemoryErrors()

    def skip(self, records: Iterable[Any]) -> Iterator[Any]:
        """All records: an in-memory job never resumes."""
        return iter(records)

    def advance(self, next_seq: int, failed: int) -> None:
        """Nothing to commit."""

    def commit(self, next_seq: int, failed: int) -> None:
        """Nothing to commit."""

    def due_in(self, next_seq: int) -> float:
        """Never: nothing to commit (``Checkpoint.due_in``)."""
        return float("inf")

    def finish(self, next_seq: int, failed: int) -> None:
        """Nothing to finish."""
