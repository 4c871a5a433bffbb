"""Exceptions the command line turns into one line on stderr: bad user input (exit code 2) and a
job that cannot go on (exit code 3)."""

from __future__ import annotations


class UsageError(ValueError):
    """A bad value supplied by the user: a path, a column, a model name, an option.

    The message names the bad value and what would be accepted. The CLI prints it as one
    line and exits with code 2, without a traceback.
    """


class JobError(RuntimeError):
    """The job cannot go on: for example a worker's model failed to load (it raised, or its
    process died three times in a row while loading). The CLI prints it as one line, exit code 3."""
