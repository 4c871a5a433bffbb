"""A Parquet sink that can resume: committed rows go to numbered part files, assembled at the end.

A Parquet file cannot be appended to or cut back (its footer is at the end), so every
``flush()`` (each checkpoint commit) writes the rows buffered since the last one as a new,
complete, fsync'd part ``DIR/part-000000.parquet``, ``part-000001`` ... (a resume deletes any
uncommitted later part); ``finish()`` streams the parts in order into the output in row groups
of exactly ``row_group_size`` rows (via a temp file of a new name, fsync'd and renamed:
``io.safe_files.atomic_write``), so the file is byte-identical however often the job was
interrupted; ``cleanup()`` deletes the parts and the folder (files parainfer did not write stay).
The schema is the first part's. More: docs/fault-tolerance.md, "Where the checkpoint lives".
"""

from __future__ import annotations

import os
from typing import Any

from parainfer.io.safe_files import (
    atomic_write,
    fsync_dir,
    make_own_dir,
    open_file,
    remove_own,
)
from parainfer.io.sinks import Sink, infer_schema, rows_table


def part_path(folder: str, n: int) -> str:
    """The n-th part file (0-based) in ``folder``."""
    return os.path.join(folder, f"part-{n:06d}.parquet")


def is_part_name(name: str) -> bool:
    """True for a name ``part_path`` makes (``part-NNNNNN.parquet``): the only files of a parts
    folder parainfer deletes."""
    return len(name) == 19 and name.startswith("part-") and name[5:11].isdigit() and name.endswith(".parquet")


class PartedParquetSink(Sink):
    """Parquet output through committed part files (see module doc).

    Args:
        path: the final .parquet output.
        folder: the parts folder (created if missing).
        id_column, text_column: written first in every row.
        row_group_size: rows per row group in the final file.
        parts: parts already committed (resume); later part files are deleted. 0: a fresh
            start (every old part is deleted).

    ``bytes_written`` is 0 until ``finish``; ``parts`` counts committed part files.
    """

    def __init__(self, path: str, folder: str, id_column: str, text_column: str, row_group_size: int = 10_000,
                 parts: int = 0) -> None:
        super().__init__(path, _NullStream(), id_column, text_column)
        self.folder, self.row_group_size, self.parts = folder, row_group_size, parts
        self._buffer: list[Any] = []  # Arrow tables of the rows written since the last part
        self._schema: Any = None
        make_own_dir(folder, "Parquet parts folder")
        remove_own(folder, lambda name: is_part_name(name) and int(name[5:11]) >= parts)
        if parts:
            import pyarrow.parquet as pq

            self._schema = pq.read_schema(part_path(folder, 0))

    def _write(self, rows: list[dict[str, Any]]) -> None:
        """Rows become Arrow at once (``io.sinks.rows_table``): a row that does not fit the
        schema raises ValueError here, so it fails alone (``write_rows_each``), as in sharded mode."""
        if rows:
            if self._schema is None:
                self._schema = infer_schema(rows)
            self._buffer.append(rows_table(rows, self._schema))

    def flush(self) -> None:
        """Write the buffered rows as the next part file (fsync'd); nothing when empty."""
        if not self._buffer:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.concat_tables(self._buffer).combine_chunks()
        path = part_path(self.folder, self.parts)
        with open_file(path, "wb", "Parquet part") as f:
            pq.write_table(table, f)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(self.folder)
        with open(path, "rb") as f:  # the committed parts' digest: a resume verifies them
            self.digest.update(f.read())
        self.parts += 1
        self._buffer = []

    def finish(self) -> None:
        """Flush, assemble the parts into the output (row groups of ``row_group_size``), fsync it.
        Safe to repeat after a crash: the parts stay until ``cleanup``."""
        self.flush()
        with atomic_write(self.path) as f:
            assemble(f, [part_path(self.folder, n) for n in range(self.parts)], self._schema, self.row_group_size)
        self.bytes_written = os.path.getsize(self.path)

    def final_digest(self) -> str:
        """Hex SHA-256 of the assembled output file (after ``finish``)."""
        from parainfer.io.digest import file_digest

        return file_digest(self.path)

    def cleanup(self) -> None:
        """Delete the part files, then the parts folder when nothing else is in it (after the
        finished output is recorded); files parainfer did not write stay."""
        remove_own(self.folder, is_part_name, rmdir=True)

    def close(self) -> None:
        """Close without assembling (parts stay for a resume); ``finish`` ends a job."""
        self._stream.close()


def assemble(out: Any, parts: list[str], schema: Any, row_group_size: int = 10_000) -> None:
    """Stream the Parquet files ``parts``, in order, into the open binary file ``out`` as one
    Parquet file in row groups of exactly ``row_group_size`` rows (the last one shorter),
    each part cast to ``schema`` (None: no parts, an empty table). Re-cutting from contiguous
    arrays makes the file independent of how the rows were split into parts (record mode's
    checkpoint parts, sharded mode's shard parts). Raises pyarrow errors for a part that
    does not cast to ``schema``. Parts are read in batches of ``row_group_size`` rows, so memory
    stays about two row groups however large a part is."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = pq.ParquetWriter(out, schema if schema is not None else pa.schema([]))
    pending: list[Any] = []
    held = 0
    for path in parts:  # read a row group's worth at a time: memory stays ~2 row groups whatever the part size
        for batch in pq.ParquetFile(path).iter_batches(batch_size=row_group_size):
            table = pa.Table.from_batches([batch]).cast(schema)
            pending.append(table)
            held += table.num_rows
            while held >= row_group_size:
                whole = pa.concat_tables(pending)
                writer.write_table(whole.slice(0, row_group_size).combine_chunks(), row_group_size=row_group_size)
                pending, held = [whole.slice(row_group_size)], held - row_group_size
    if held:
        writer.write_table(pa.concat_tables(pending).combine_chunks(), row_group_size=row_group_size)
    writer.close()


class _NullStream:
    """Stands in for the file stream of ``Sink`` (parts are files of their own)."""

    closed = False

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True
