"""How local workers are started: a warmed ``forkserver`` (default on Linux) or ``spawn``.

With ``forkserver`` one server process imports torch and transformers once (``preload``) and
every worker is ``fork()``-ed from it with those modules in memory; under ``spawn`` each worker
imports them itself (~17 s of CPU per worker on the 2-core machine). The server runs no torch
op, so no thread pool exists when it forks. ``PARAINFER_START_METHOD=spawn`` (or
``LocalExecutor(start_method="spawn")``) restores spawn; platforms without ``forkserver``
(Windows, macOS default) use it. Measurements and thread safety: docs/timing.md, "Worker
start-up".
"""

from __future__ import annotations

import importlib.util
import multiprocessing as mp
import os
from typing import Any

START_METHODS = ("forkserver", "spawn")

# Imported once by the forkserver (see ``parainfer.executors.preload``) when the predictor
# asks for them through its ``preload_modules`` attribute.
PRELOAD_MODULE = "parainfer.executors.preload"


def choose_start_method(requested: str | None = None) -> str:
    """The start method to use: ``requested``, else ``$PARAINFER_START_METHOD``, else
    ``forkserver`` where the platform has it, else ``spawn``.

    Raises ValueError for a name outside ``START_METHODS``."""
    name = requested or os.environ.get("PARAINFER_START_METHOD") or "forkserver"
    if name not in START_METHODS:
        raise ValueError(f"start method {name!r} is not one of {', '.join(START_METHODS)} "
                         f"(PARAINFER_START_METHOD or LocalExecutor(start_method=...))")
    if name == "forkserver" and "forkserver" not in mp.get_all_start_methods():
        return "spawn"
    return name


def preload_list(predictor: Any) -> list[str]:
    """Modules the forkserver imports before forking workers for ``predictor``: ``preload``
    (which makes the server die with the driver and imports the heavy modules the predictor
    names in its optional ``preload_modules`` attribute, passed on through ``$PARAINFER_PRELOAD``),
    the worker entry point, the predictor's own module and, when the driver is parainfer's own
    command line, the CLI's imports (``preload_cli``: each child re-runs the driver's main module
    before its target; with its imports already in memory that costs ~nothing instead of ~0.1 s).
    All of them but ``preload`` itself also go into ``$PARAINFER_PRELOAD``, so that ``preload``
    imports them with the garbage collector off and freezes them."""
    import threading

    heavy = [m for m in getattr(predictor, "preload_modules", ()) if importlib.util.find_spec(m.split(".")[0])]
    light = ["parainfer.executors.worker", type(predictor).__module__, *_cli_main()]
    os.environ["PARAINFER_PRELOAD"] = ",".join(heavy + light)  # read by the forkserver (inherits the env at start)
    main = threading.current_thread() is threading.main_thread()  # PDEATHSIG fires when the starting thread ends
    os.environ["PARAINFER_FORKSERVER_DIE_WITH_PARENT"] = "1" if main else "0"
    return [PRELOAD_MODULE, *light]


def _cli_main() -> list[str]:
    """``["parainfer.executors.preload_cli"]`` when the driver runs ``parainfer`` (the console script) or
    ``python -m parainfer.cli``, else nothing: a user's own main module is never imported
    by the server (it is re-run in each child, as ``multiprocessing`` documents)."""
    import sys

    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None) or ""
    script = os.path.basename(getattr(main, "__file__", None) or "")
    return ["parainfer.executors.preload_cli"] if name == "parainfer.cli" or script == "parainfer" else []


def make_context(method: str, predictor: Any) -> Any:
    """A multiprocessing context for ``method``; for ``forkserver`` the preload list is set
    and the server started now, so its imports overlap the driver's own set-up.

    The forkserver is one per driver process: the first executor's preload list is the one
    imported (later executors still work; their workers import what is missing)."""
    ctx = mp.get_context(method)
    if method == "forkserver":
        from multiprocessing import forkserver

        if not _server_running():
            ctx.set_forkserver_preload(preload_list(predictor))
        forkserver.ensure_running()
    return ctx


def _server_running() -> bool:
    from multiprocessing import forkserver

    return getattr(forkserver._forkserver, "_forkserver_pid", None) is not None  # noqa: SLF001
