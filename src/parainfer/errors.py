"""Exceptions the command line turns into one line on stderr: bad user input (exit code 2) and a
job that cannot go on (exit code 3)."""

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
