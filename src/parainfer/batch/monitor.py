"""Progress on stderr: records done, records/s, ETA (rich), shown only on a terminal."""

from __future__ import annotations

import sys
from typing import Any


class Progress:
    """A progress bar over records. A no-op when disabled or stderr is not a terminal.

    Args:
        total: records expected (None when unknown, e.g. stdin).
        enabled: False for ``--quiet``.
    """

    def __init__(self, total: int | None, enabled: bool = True):
        self._bar: Any = None
        self._task: Any = None
        if not (enabled and sys.stderr.isatty()):
            return
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TaskProgressColumn,
                                   TextColumn, TimeElapsedColumn, TimeRemainingColumn)

        self._bar = RichProgress(
            TextColumn("[bold]parainfer"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
            TextColumn("{task.fields[rate]} records/s"), TimeElapsedColumn(), TextColumn("ETA"),
            TimeRemainingColumn(), console=Console(stderr=True), transient=False,
        )
        self._task = self._bar.add_task("records", total=total, rate="-")
        self._bar.start()

    def update(self, done: int, rate: float) -> None:
        """Set records done and the current records/s."""
        if self._bar is not None:
            self._bar.update(self._task, completed=done, rate=f"{rate:,.0f}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
