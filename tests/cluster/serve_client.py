"""Load for a server under test, run inside the cluster's namespace: ``python serve_client.py URL SECONDS``.

Waits for /health 200, then keeps 4 clients posting /v1/classify (3 texts each) for SECONDS and
prints one JSON line: status code counts, answers with wrong content, and /health at the end.
"""

from __future__ import annotations

import collections
import json
import sys
import threading
import time
from typing import Callable

import httpx


def wait_ready(url: str, seconds: float) -> None:
    """Poll /health until it answers 200; AssertionError after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "server never became ready"
        time.sleep(0.1)


def post_classify(url: str, k: int, going: Callable[[], bool], codes: collections.Counter, wrong: list[int]) -> None:
    """Client ``k``: post /v1/classify (3 texts of 1-50 "x"s each) while ``going()``; count each
    status code in ``codes`` and each 200 whose lengths do not match its texts in ``wrong[0]``."""
    with httpx.Client(timeout=60) as http:
        i = 0
        while going():
            texts = ["x" * (1 + (k * 7 + i + j) % 50) for j in range(3)]
            r = http.post(url + "/v1/classify", json={"input": texts})
            codes[r.status_code] += 1
            if r.status_code == 200 and [d["length"] for d in r.json()["data"]] != [len(t) for t in texts]:
                wrong[0] += 1
            i += 1


def main(url: str, seconds: float) -> None:
    wait_ready(url, 120)
    print("READY", flush=True)
    codes: collections.Counter = collections.Counter()
    wrong = [0]
    end = time.monotonic() + seconds

    threads = [threading.Thread(target=post_classify, args=(url, k, lambda: time.monotonic() < end, codes, wrong))
               for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    health = httpx.get(url + "/health", timeout=10).json()
    print(json.dumps({"codes": dict(codes), "wrong": wrong[0], "health": health}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
