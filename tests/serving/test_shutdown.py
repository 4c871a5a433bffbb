"""SIGTERM: the server stops accepting, finishes the requests in flight, stops its workers, exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from conftest import free_port


def test_sigterm_finishes_in_flight_requests_then_exits():
    port = free_port()
    here = str(Path(__file__).parent)
    env = {**os.environ, "PARAINFER_TEST_BATCH_MS": "1500", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "parainfer.serving", "--task", "classify", "--model",
                             "slow_models:fixed_cost", "--workers", "1", "--port", str(port), "--log-level",
                             "warning"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        with ThreadPoolExecutor(4) as pool:
            calls = [pool.submit(httpx.post, url + "/v1/classify", json={"input": [f"text {i}"]}, timeout=30)
                     for i in range(4)]
            time.sleep(0.5)  # all four are in the server: one batch running
            proc.send_signal(signal.SIGTERM)
            assert [c.result().status_code for c in calls] == [200] * 4
        # uvicorn re-raises the signal once shut down, so the exit status says "ended by SIGTERM"
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
