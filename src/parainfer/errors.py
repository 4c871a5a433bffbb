"""Exceptions the command line turns into one line on stderr: bad user input (exit code 2), a
job that cannot go on (exit code 3), and a file the job cannot write (exit code 4)."""

from __future__ import annotations


class ParainferError(Exception):
    """Base class of parainfer's own exceptions (catch this to catch them all)."""


class UsageError(ParainferError, ValueError):
    """A bad value supplied by the user: a path, a column, a model name, an option.

    The message names the bad value and what would be accepted. The CLI prints it as one
    line and exits with code 2, without a traceback.
    """


class JobError(ParainferError, RuntimeError):
    """The job cannot go on: for example a worker's model failed to load (it raised, or its
    process died three times in a row while loading). The CLI prints it as one line, exit code 3."""


class StorageError(ParainferError, RuntimeError):
    """Writing the output, errors file or checkpoint failed (a full disk, a file size limit, an
    I/O error). The message names the file, the cause, how many input records are committed
    and that a rerun of the same command resumes. The CLI prints it as one line, exit code 4."""


def storage_message(e: OSError, fallback_path: str, committed: int, checkpoint: str | None) -> str:
    """The one line for a failed write: path, cause (strerror and errno name), what is safe.

    Args:
        e: the OSError from a write, flush or fsync.
        fallback_path: the file named when ``e`` carries no filename (the output).
        committed: input records the last checkpoint commit made durable.
        checkpoint: the manifest path, or None for a job without a checkpoint (stdin/stdout).
    """
    import errno

    name = errno.errorcode.get(e.errno or 0, "EIO")
    path = e.filename or fallback_path
    cause = f"{e.strerror or e} ({name})"
    if checkpoint is None:
        return f"cannot write {path!r}: {cause}; this job has no checkpoint (stdin or stdout): rerun it to start over"
    return (f"cannot write {path!r}: {cause}; {committed:,} input records are committed (checkpoint "
            f"{checkpoint!r}): free some space and rerun the same command to resume from there")


class RecordsFailed(ParainferError):
    """Some records failed in ``parainfer.predict(..., errors="raise")``; raised after every other
    record is done.

    Attributes:
        failures: (input position, reason) of each failed record, in input order.
        total: the number of input records.
        results: what ``errors="return"`` would have returned (None results and an ``error``
            column for the failed records), so the work done is not lost.
    """

    def __init__(self, failures: list[tuple[int, str]], total: int, results: object = None):
        self.failures, self.total, self.results = failures, total, results
        shown = "; ".join(f"[{i}] {reason}" for i, reason in failures[:5])
        more = f"; ... ({len(failures) - 5} more in .failures)" if len(failures) > 5 else ""
        super().__init__(f"{len(failures)} of {total} records failed: {shown}{more} "
                         "(errors='return' gives them back as rows instead)")
