"""The merger: puts results back in input order, exactly once, through a reorder buffer.

Records wait in the buffer (keyed by their input position ``seq``) from their task's creation
until their result, or their failure, is known; ``drain`` releases, in input order, the longest
run of finished records that starts at the write frontier. The record-mode driver bounds the
buffer by not creating tasks while it holds too many records. Two kinds of results: row dicts
(``complete``, ``drain``: the merger builds each row from the record and the model's result, the
sink encodes it), or output lines the workers already built and encoded (``complete_encoded``,
``drain_encoded``: the driver joins the bytes in order; ``executors.base.RowInfo``). Both build
rows with ``io.rows.build_row``, so the bytes are equal.
"""

from __future__ import annotations

from typing import Any

from parainfer.io.rows import build_row
from parainfer.records import Record, RecordError

_FAILED = object()


class Merger:
    """Reorder buffer from task results to output rows.

    A row is the id, the text, the input's other columns, then the model's result columns. An
    input column with the same name as a result column (a gold ``label``, say) is kept as
    ``input_<name>``, so nothing the user gave is lost.

    Args:
        id_column, text_column: names used for the id and text in output rows.
        own_rows: each result is the whole output row (``Predictor.writes_own_rows``).
    """

    def __init__(self, id_column: str = "id", text_column: str = "text", own_rows: bool = False):
        self.id_column = id_column
        self.text_column = text_column
        self.own_rows = own_rows
        self._records: dict[int, Record] = {}
        self._done: dict[int, Any] = {}
        self.next_seq = 0
        self.written = 0
        self.failed = 0
        self.renamed: set[str] = set()  # input columns written as input_<name> so far
        self.last_drained: list[tuple[int, int]] = []  # (seq, line) of the rows of the last drain
        self._high = 0  # 1 + the highest seq registered (encoded results: records in flight)
        self._encoded = False  # expect_encoded was called: no Records are held

    def expect(self, records: list[Record]) -> None:
        """Register records whose tasks were just created. A record before the write frontier
        (``next_seq``: a resume computes a partly committed window again) is already written:
        it is not held, and its result is dropped (exactly once)."""
        low = self.next_seq
        for r in records:
            if r.seq >= low:
                self._records[r.seq] = r

    def fail(self, err: RecordError) -> None:
        """Mark a record failed (it will be skipped in the output; it is in the errors file)."""
        self._records.pop(err.seq, None)
        self._done[err.seq] = _FAILED
        self._high = max(self._high, err.seq + 1)
        self.failed += 1

    def expect_encoded(self, high: int) -> None:
        """Register that every record before seq ``high`` has a task (results come encoded:
        the merger holds no Record, only the bytes of finished rows)."""
        self._high = max(self._high, high)
        self._encoded = True

    def complete_encoded(self, seqs: list[int], lines: list[bytes | None]) -> None:
        """Store the encoded output lines of ``seqs`` (None marks a record the caller has failed)."""
        low = self.next_seq
        for seq, line in zip(seqs, lines):
            if line is not None and seq >= low:
                self._done[seq] = line

    def drain_encoded(self) -> tuple[bytes, int]:
        """(the bytes of the lines ready to write, in input order; how many lines)."""
        chunks: list[bytes] = []
        done = self._done
        seq = self.next_seq
        while seq in done:
            line = done.pop(seq)
            seq += 1
            if line is not _FAILED:
                chunks.append(line)
        self.next_seq = seq
        self.written += len(chunks)
        return b"".join(chunks), len(chunks)

    def complete(self, seqs: list[int], outputs: list[dict[str, Any] | None]) -> None:
        """Store results for ``seqs`` (None marks a record the caller has failed)."""
        low = self.next_seq
        for seq, out in zip(seqs, outputs):
            if out is not None and seq >= low:
                self._done[seq] = out

    def record(self, seq: int) -> Record | None:
        """The buffered record at ``seq`` (for error reporting)."""
        return self._records.get(seq)

    @property
    def buffered(self) -> int:
        """Records held: waiting for a result or for an earlier record."""
        return max(0, self._high - self.next_seq) if self._encoded else len(self._records)

    def drain(self) -> list[dict[str, Any]]:
        """Rows ready to write, in input order; each record is released exactly once."""
        rows: list[dict[str, Any]] = []
        drained: list[tuple[int, int]] = []
        done, records = self._done, self._records
        while self.next_seq in done:
            seq = self.next_seq
            out = done.pop(seq)
            self.next_seq += 1
            if out is _FAILED:
                continue
            rec = records.pop(seq)
            drained.append((seq, rec.line))
            rows.append(build_row(self.id_column, self.text_column, self.own_rows, rec.id, rec.text, rec.extra,
                                  out, self.renamed))
        self.written += len(rows)
        self.last_drained = drained
        return rows
