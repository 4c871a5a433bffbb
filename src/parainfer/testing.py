"""Callable test models for ``--model parainfer.testing:NAME`` (tests, benchmarks, demos).

They need no weights and make scheduling effects visible: ``echo`` returns the text length at
no cost; ``sleepy`` sleeps ``PARAINFER_TEST_MS_PER_TOKEN`` ms per (chars/4) token, and worker
``PARAINFER_TEST_SLOW_WORKER`` (if set) is ``PARAINFER_TEST_SLOWDOWN`` times slower (a
straggler); ``crash_on_marker`` is echo, but a text containing ``PARAINFER_TEST_MARKER``
(default "@@crash@@") SIGKILLs its worker (a poison record), ``raise_on_marker`` raises
ValueError instead (``sleepy_raise_on_marker`` after sleepy's sleep), ``hang_on_marker`` sleeps an hour (a hung task); ``origin`` is echo's
output plus the worker's parent pid and whether ``colorsys`` (a module nothing else imports)
was in memory before the call: which start method made the worker.
"""

from __future__ import annotations

import os
import signal
import time


def _worker_id() -> int:
    return int(os.environ.get("PARAINFER_WORKER_ID", "0"))


def _marker() -> str:
    return os.environ.get("PARAINFER_TEST_MARKER", "@@crash@@")


def echo(texts: list[str]) -> list[dict]:
    """Returns ``{"length": len(text)}`` per text."""
    return [{"length": len(t)} for t in texts]


def origin(texts: list[str]) -> list[dict]:
    """Echo's output plus ``ppid`` (the process that forked or spawned this worker) and
    ``preloaded`` (``colorsys`` already imported: inherited from a forkserver's preload) and
    ``marker`` (``PARAINFER_TEST_MARKER`` as the worker sees it) and ``gc`` (whether the cyclic
    collector is on, and how many objects sit in its permanent generation: frozen by a
    forkserver's preload)."""
    import gc
    import sys

    preloaded = "colorsys" in sys.modules
    collector = {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}
    return [{"length": len(t), "ppid": os.getppid(), "preloaded": preloaded, "marker": _marker(), "gc": collector}
            for t in texts]


def sleepy(texts: list[str]) -> list[dict]:
    """Sleeps in proportion to the batch's tokens (chars/4 + 1 each); returns echo's output."""
    ms = float(os.environ.get("PARAINFER_TEST_MS_PER_TOKEN", "0.05"))
    slow = os.environ.get("PARAINFER_TEST_SLOW_WORKER")
    factor = float(os.environ.get("PARAINFER_TEST_SLOWDOWN", "3")) if slow and int(slow) == _worker_id() else 1.0
    tokens = sum(len(t) // 4 + 1 for t in texts)
    time.sleep(tokens * ms * factor / 1000.0)
    return echo(texts)


def crash_on_marker(texts: list[str]) -> list[dict]:
    """SIGKILLs the worker when a text holds the marker; else echo."""
    if any(_marker() in t for t in texts):
        os.kill(os.getpid(), signal.SIGKILL)
    return echo(texts)


def raise_on_marker(texts: list[str]) -> list[dict]:
    """Raises ValueError when a text holds the marker; else echo."""
    for t in texts:
        if _marker() in t:
            raise ValueError(f"poison record: {t[:40]!r}")
    return echo(texts)


def sleepy_raise_on_marker(texts: list[str]) -> list[dict]:
    """``raise_on_marker`` after ``sleepy``'s sleep: a slow job with poison records."""
    sleepy(texts)
    return raise_on_marker(texts)


def hang_on_marker(texts: list[str]) -> list[dict]:
    """Sleeps an hour when a text holds the marker; else echo."""
    if any(_marker() in t for t in texts):
        time.sleep(3600)
    return echo(texts)
