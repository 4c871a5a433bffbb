"""A test model whose import (= its load in a worker) takes PARAINFER_TEST_LOAD_S seconds."""

import os
import time

time.sleep(float(os.environ.get("PARAINFER_TEST_LOAD_S", "0")))


def echo(texts: list[str]) -> list[dict]:
    return [{"length": len(t)} for t in texts]


def fixed_cost(texts: list[str]) -> list[dict]:
    """Like a small model on a CPU: a fixed cost per batch (PARAINFER_TEST_BATCH_MS, default 100)
    plus a little per text (0.5 ms), so batching pays off as it does for a real model."""
    time.sleep(float(os.environ.get("PARAINFER_TEST_BATCH_MS", "100")) / 1000 + 0.0005 * len(texts))
    return echo(texts)
