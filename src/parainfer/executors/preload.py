"""Imported by the local executor's forkserver only (``executors.start_method``): die with the
driver, apply the workers' environment defaults, then import the modules named in
``$PARAINFER_PRELOAD``, so that workers forked from the server start with them in memory. Only
imports run here, never a torch op; a module that fails to import is skipped (the worker
imports it again and reports the error). transformers' import structure comes from a disk cache (``import_cache``); the imports
run with the garbage collector off and end in ``gc.freeze`` (the pattern of "Dismissing Python
Garbage Collection at Instagram", 2017; bpo-31558). Why and what it saves: docs/timing.md,
"Worker start-up".
"""

from __future__ import annotations

import atexit
import gc
import importlib
import os

from parainfer.executors import import_cache
from parainfer.executors.worker_env import apply_env_defaults, die_with_parent

if os.environ.get("PARAINFER_FORKSERVER_DIE_WITH_PARENT") == "1":
    die_with_parent()  # a SIGKILLed driver takes the server (and so its workers) with it at once

apply_env_defaults()  # read by huggingface_hub/transformers at import time

import_cache.install()  # transformers' import structure from disk (~0.4 s; see import_cache)
_gc_was_on = gc.isenabled()
gc.disable()
try:
    for _name in filter(None, os.environ.get("PARAINFER_PRELOAD", "").split(",")):
        try:
            importlib.import_module(_name)
        except Exception:  # noqa: BLE001 - see the module docstring
            pass
finally:
    gc.freeze()  # everything imported so far: never collected, never touched by a child's GC
    atexit.register(gc.unfreeze)  # collectable again at exit: extension modules (triton's nanobind)
    if _gc_was_on:                # report frozen objects as leaks on the driver's stderr otherwise
        gc.enable()
