"""A model for the elastic cluster test, slow while a gate file exists: the job lasts as long as
the test needs (a node joining on a loaded machine takes 10-60 s), then ends at once when the
test removes the file. ``PARAINFER_TEST_GATE`` names the file (every node sees it: the cluster's
namespaces share one file system)."""

from __future__ import annotations

import os
import time

GATED_TASK_S = 0.5


def gated(texts: list[str]) -> list[dict]:
    """Each text's length; sleeps ``GATED_TASK_S`` per batch while the gate file exists."""
    gate = os.environ.get("PARAINFER_TEST_GATE")
    if gate and os.path.exists(gate):
        time.sleep(GATED_TASK_S)
    return [{"length": len(t)} for t in texts]
