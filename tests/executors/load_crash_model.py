"""A test model whose import (= its load in a worker) kills the worker process, as a segfault or
the out-of-memory killer would: no exception, no message. The driver imports it unharmed."""

import os
import signal

if "PARAINFER_WORKER_ID" in os.environ:  # set in workers only, before the model loads
    os.kill(os.getpid(), signal.SIGKILL)


def echo(texts: list[str]) -> list[dict]:
    return [{"length": len(t)} for t in texts]
