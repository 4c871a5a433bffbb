"""Exceptions raised for bad user input (exit code 2 at the command line)."""

from __future__ import annotations


class UsageError(ValueError):
    """A bad value supplied by the user: a path, a column, a model name, an option.

    The message names the bad value and what would be accepted. The CLI prints it as one
    line and exits with code 2, without a traceback.
    """
