"""Imported by the local executor's forkserver only (``executors.start_method``): die with the
driver (when it started the server from its main thread), apply the
workers' environment defaults, then import the modules named in ``$PARAINFER_PRELOAD``
(comma-separated), so that workers forked from the server start with them in memory.

Only imports run here, never a torch op: no thread pool exists when the server forks.
A module that fails to import is skipped (the worker imports it again and reports the error).
"""

from __future__ import annotations

import importlib
import os

from parainfer.executors.worker import WORKER_ENV_DEFAULTS, _die_with_parent

if os.environ.get("PARAINFER_FORKSERVER_DIE_WITH_PARENT") == "1":
    _die_with_parent()  # a SIGKILLed driver takes the server (and so its workers) with it at once

for _var, _value in WORKER_ENV_DEFAULTS.items():
    os.environ.setdefault(_var, _value)  # read by huggingface_hub/transformers at import time

for _name in filter(None, os.environ.get("PARAINFER_PRELOAD", "").split(",")):
    try:
        importlib.import_module(_name)
    except Exception:  # noqa: BLE001 - see the module docstring
        pass
