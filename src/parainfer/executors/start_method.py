"""How local workers are started: a warmed ``forkserver`` (default on Linux) or ``spawn``.

With ``forkserver`` one server process imports torch and transformers once (``preload``) and
every worker is ``fork()``-ed from it with those modules in memory; under ``spawn`` each worker
imports them itself (~17 s of CPU per worker on the 2-core machine). The server runs no torch
op, so no thread pool exists when it forks. ``PARAINFER_START_METHOD=spawn`` (or
``LocalExecutor(start_method="spawn")``) restores spawn; platforms without ``forkserver``
(Windows, macOS default) use it. Either way the workers start without the driver's main
module (``start_without_driver_main``): no ``__main__`` guard needed. Measurements and thread
safety: docs/timing.md, "Worker start-up".
"""

from __future__ import annotations

import functools
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


# Every process parainfer starts (local workers, engine replicas) has a name with this prefix;
# ``start_without_driver_main`` recognises them by it.
PROCESS_NAME_PREFIX = "parainfer-"


def start_without_driver_main() -> None:
    """Make ``multiprocessing`` start parainfer's own processes (named ``PROCESS_NAME_PREFIX``...)
    without the driver's main module; other processes of the driver are not affected.

    Under ``spawn`` and ``forkserver``, ``multiprocessing`` re-runs the parent's ``__main__`` in
    every child before its target (``spawn.get_preparation_data`` sends ``init_main_from_path``
    or ``init_main_from_name``; the child runs it as ``__mp_main__``). Workers do not need it:
    they load models by name or path, and a model function defined in ``__main__`` travels by
    value (``models.python_callable``). Re-running it made a script without the
    ``if __name__ == "__main__":`` guard call the API again in every worker, and a script read
    from stdin (``python - <<EOF``) fail (its path, ``<stdin>``, is no file). So the preparation
    data of our processes leaves both keys out, as loky's workers do (``init_main_module=False``).
    Idempotent; installed by ``make_context`` and the engine replicas before their first start.
    """
    from multiprocessing import spawn

    if getattr(spawn.get_preparation_data, "_parainfer_without_main", False):
        return
    original = spawn.get_preparation_data

    @functools.wraps(original)
    def get_preparation_data(name: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        data = original(name, *args, **kwargs)
        if isinstance(name, str) and name.startswith(PROCESS_NAME_PREFIX):
            data.pop("init_main_from_name", None)
            data.pop("init_main_from_path", None)
        return data

    get_preparation_data._parainfer_without_main = True  # type: ignore[attr-defined]
    spawn.get_preparation_data = get_preparation_data


def preload_list(predictor: Any) -> list[str]:
    """Modules the forkserver imports before forking workers for ``predictor``: ``preload``
    (which makes the server die with the driver and imports the heavy modules the predictor
    names in its optional ``preload_modules`` attribute, passed on through ``$PARAINFER_PRELOAD``),
    the worker entry point and the predictor's own module. All of them but ``preload`` itself
    also go into ``$PARAINFER_PRELOAD``, so that ``preload`` imports them with the garbage
    collector off and freezes them."""
    heavy = [m for m in getattr(predictor, "preload_modules", ()) if importlib.util.find_spec(m.split(".")[0])]
    light = ["parainfer.executors.worker", type(predictor).__module__]
    os.environ["PARAINFER_PRELOAD"] = ",".join(heavy + light)  # read by the forkserver (inherits the env at start)
    # PDEATHSIG fires when the starting thread ends
    os.environ["PARAINFER_FORKSERVER_DIE_WITH_PARENT"] = die_with_parent_env()[DIE_WITH_PARENT]
    return [PRELOAD_MODULE, *light]


TRACKER_WARNINGS = "ignore::UserWarning:multiprocessing.resource_tracker"


def quiet_resource_tracker() -> None:
    """Keep multiprocessing's resource tracker from printing "leaked semaphore" warnings when a
    job stops on an error while workers are being killed (the tracker still removes what was
    left; the job's own one-line error is what the user needs). The tracker is a separate
    interpreter started lazily, so the filter goes through ``PYTHONWARNINGS``, which it and the
    workers inherit; a user's own ``PYTHONWARNINGS`` is kept and this filter appended."""
    current = os.environ.get("PYTHONWARNINGS", "")
    if TRACKER_WARNINGS not in current:
        os.environ["PYTHONWARNINGS"] = f"{current},{TRACKER_WARNINGS}" if current else TRACKER_WARNINGS


def make_context(method: str, predictor: Any) -> Any:
    """A multiprocessing context for ``method``; for ``forkserver`` the preload list is set
    and the server started now, so its imports overlap the driver's own set-up.

    The forkserver is one per driver process: the first executor's preload list is the one
    imported (later executors still work; their workers import what is missing). Processes
    named ``PROCESS_NAME_PREFIX``... start without the driver's main module
    (``start_without_driver_main``)."""
    start_without_driver_main()
    quiet_resource_tracker()
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
