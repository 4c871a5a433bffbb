"""Records: one input row each, and the per-record failure that goes to the errors file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Record:
    """One input row.

    Attributes:
        seq: 0-based position of the row in the input (the merger's ordering key).
        id: the row's id (from the id column, or the 1-based line number for .txt input).
        text: the text the model reads (``--task generate`` also takes a chat conversation: a
            list of {"role", "content"} dicts, checked by ``io.sources.check_messages``).
        extra: every other input column, passed through to the output unchanged.
        line: 1-based line (or row) number in the input file (0 when unknown).
    """

    seq: int
    id: Any
    text: str | list[dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)
    line: int = 0


@dataclass(slots=True)
class RecordError:
    """A row that could not be used; it is quarantined in the errors file, the job goes on.

    Attributes:
        seq: 0-based position of the row in the input.
        line: 1-based line (or row) number in the input file, for the user to find it.
        id: the row's id when it could be read, else None.
        reason: why the row failed, naming the bad value and what is accepted.
        text: the text when there was one (for model failures), else None.
    """

    seq: int
    line: int
    id: Any
    reason: str
    text: str | None = None
