"""A test model whose import (= its load in a worker) takes PARAINFER_TEST_LOAD_S seconds."""

import os
import time

from parainfer.models.python_callable import CallablePredictor

time.sleep(float(os.environ.get("PARAINFER_TEST_LOAD_S", "0")))


def echo(texts: list[str]) -> list[dict]:
    return [{"length": len(t)} for t in texts]


def fixed_cost(texts: list[str]) -> list[dict]:
    """Like a small model on a CPU: a fixed cost per batch (PARAINFER_TEST_BATCH_MS, default 100)
    plus a little per text (0.5 ms), so batching pays off as it does for a real model."""
    time.sleep(float(os.environ.get("PARAINFER_TEST_BATCH_MS", "100")) / 1000 + 0.0005 * len(texts))
    return echo(texts)



class CountingPredictor(CallablePredictor):
    """A CallablePredictor that records the thread of each ``token_lengths`` call in the server
    process (``threads``), so a test can tell whether counting ran on the event loop."""

    threads: list[str] = []

    def token_lengths(self, texts: list[str]) -> list[int]:
        import threading

        CountingPredictor.threads.append(threading.current_thread().name)
        return super().token_lengths(texts)
