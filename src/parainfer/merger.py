"""The merger: puts results back in input order, exactly once, through a reorder buffer.

Records wait in the buffer (keyed by their input position ``seq``) from the moment their
task is created until their result, or their failure, is known. ``drain`` releases the
longest run of finished records that starts at the write frontier, in input order. The
engine bounds the buffer by not creating tasks while it holds too many records.
"""

from __future__ import annotations

from typing import Any

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

    def expect(self, records: list[Record]) -> None:
        """Register records whose tasks were just created."""
        for r in records:
            self._records[r.seq] = r

    def fail(self, err: RecordError) -> None:
        """Mark a record failed (it will be skipped in the output; it is in the errors file)."""
        self._records.pop(err.seq, None)
        self._done[err.seq] = _FAILED
        self.failed += 1

    def complete(self, seqs: list[int], outputs: list[dict[str, Any] | None]) -> None:
        """Store results for ``seqs`` (None marks a record the caller has failed)."""
        for seq, out in zip(seqs, outputs):
            if out is not None:
                self._done[seq] = out

    def record(self, seq: int) -> Record | None:
        """The buffered record at ``seq`` (for error reporting)."""
        return self._records.get(seq)

    @property
    def buffered(self) -> int:
        """Records held: waiting for a result or for an earlier record."""
        return len(self._records)

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
            if self.own_rows:
                rows.append(out)
                continue
            extra = rec.extra
            if not extra.keys().isdisjoint(out):  # an input column named like a result column
                self.renamed.update(extra.keys() & out.keys())
                extra = {(f"input_{k}" if k in out else k): v for k, v in extra.items()}
            # Model outputs may hold numpy arrays and scalars: every sink writes them natively.
            rows.append({self.id_column: rec.id, self.text_column: rec.text, **extra, **out})
        self.written += len(rows)
        self.last_drained = drained
        return rows
