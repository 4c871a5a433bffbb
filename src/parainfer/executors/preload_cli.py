"""Imported by the local executor's forkserver when the driver is parainfer's command line
(``executors.start_method.preload_list``): imports ``parainfer.cli`` for its dependencies
(typer, click, the serving CLI: ~0.1 s) and then forgets the module itself.

Each child of the server re-runs the driver's main module before its target (``multiprocessing``
runs it as ``__mp_main__``); with the dependencies in memory that is cheap. The module itself
is dropped from ``sys.modules`` so that ``runpy`` executes it afresh in the child instead of
warning that it was already imported.
"""

from __future__ import annotations

import sys

import parainfer
import parainfer.cli  # noqa: F401 - for its imports

sys.modules.pop("parainfer.cli", None)
if hasattr(parainfer, "cli"):
    delattr(parainfer, "cli")
