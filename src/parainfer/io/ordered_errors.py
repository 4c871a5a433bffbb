"""Errors written in input order: held until the write frontier passes them, so the errors file
is a prefix-consistent part of the checkpoint (see ``io.checkpoint``)."""

from __future__ import annotations

import heapq
import itertools
from typing import Iterable

from parainfer.io.sinks import ErrorSink
from parainfer.records import RecordError


class OrderedErrors:
    """Holds record errors until the write frontier passes them, then writes them in input order.

    ``write(errs)`` buffers; ``release(next_seq)`` writes every held error with seq < next_seq.
    Attributes path, count and offset are the file's (see ErrorSink).
    """

    def __init__(self, sink: ErrorSink):
        self.sink = sink
        self._held: list[tuple[int, int, RecordError]] = []
        self._tie = itertools.count()

    @property
    def path(self) -> str:
        return self.sink.path

    @property
    def count(self) -> int:
        return self.sink.count

    @property
    def offset(self) -> int:
        return self.sink.offset

    def write(self, errs: Iterable[RecordError]) -> None:
        for e in errs:
            heapq.heappush(self._held, (e.seq, next(self._tie), e))

    def release(self, next_seq: int) -> None:
        """Write the held errors of records before ``next_seq``, in input order."""
        out = []
        while self._held and self._held[0][0] < next_seq:
            out.append(heapq.heappop(self._held)[2])
        self.sink.write(out)

    def flush(self) -> None:
        self.sink.flush()

    def close(self) -> None:
        self.sink.close()
