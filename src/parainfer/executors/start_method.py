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

from parainfer.executors.worker_env import DIE_WITH_PARENT, die_with_parent_env

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


def preload_driver_main(module: str) -> None:
    """Declare ``module`` the driver's main module (an entry point such as parainfer's command
    line calls this at start-up, before any executor starts): the forkserver then imports it for
    its dependencies and forgets the module itself (``preload``). Each child of the server re-runs
    the driver's main module before its target (``multiprocessing`` runs it as ``__mp_main__``);
    with its imports already in memory that costs ~nothing instead of ~0.1 s. A driver that
    declares nothing (a user's own script) is never imported by the server.

    Args:
        module: the dotted name of the main module, e.g. "parainfer.cli".
    """
    _driver_main[:] = [module]


_driver_main: list[str] = []  # set once by the driver's entry point (preload_driver_main)


def preload_list(predictor: Any) -> list[str]:
    """Modules the forkserver imports before forking workers for ``predictor``: ``preload``
    (which makes the server die with the driver and imports the heavy modules the predictor
    names in its optional ``preload_modules`` attribute, passed on through ``$PARAINFER_PRELOAD``),
    the worker entry point and the predictor's own module. All of them but ``preload`` itself
    also go into ``$PARAINFER_PRELOAD``, so that ``preload`` imports them with the garbage
    collector off and freezes them; the driver's main module (``preload_driver_main``), if
    declared, goes into ``$PARAINFER_PRELOAD_MAIN`` (imported last, then forgotten)."""
    heavy = [m for m in getattr(predictor, "preload_modules", ()) if importlib.util.find_spec(m.split(".")[0])]
    light = ["parainfer.executors.worker", type(predictor).__module__]
    os.environ["PARAINFER_PRELOAD"] = ",".join(heavy + light)  # read by the forkserver (inherits the env at start)
    os.environ["PARAINFER_PRELOAD_MAIN"] = ",".join(_driver_main)
    # PDEATHSIG fires when the starting thread ends
    os.environ["PARAINFER_FORKSERVER_DIE_WITH_PARENT"] = die_with_parent_env()[DIE_WITH_PARENT]
    return [PRELOAD_MODULE, *light]


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
