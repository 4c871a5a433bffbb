"""A model whose every output row depends on its batch-mates: any change in which records are
batched together changes the output bytes (the check of tests/batch/test_same_bytes.py, on any
CPU). Imported by name in each worker (``--model batchmates:batchmates``)."""

from __future__ import annotations

import hashlib
import os
import time


def batchmates(texts: list[str]) -> list[dict]:
    """B texts -> B rows: the batch's fingerprint (SHA-256 of its sorted texts), its size and
    its widest text (characters). Sleeps ``BATCHMATES_MS_PER_RECORD`` ms a record (default 0).
    A text holding "@@die@@" kills the worker process (a poison record)."""
    if any("@@die@@" in t for t in texts):
        os._exit(3)
    time.sleep(float(os.environ.get("BATCHMATES_MS_PER_RECORD", "0")) * len(texts) / 1000)
    batch = hashlib.sha256("\x00".join(sorted(texts)).encode()).hexdigest()[:16]
    width = max(len(t) for t in texts)
    return [{"batch": batch, "batch_size": len(texts), "width": width, "chars": len(t)} for t in texts]
