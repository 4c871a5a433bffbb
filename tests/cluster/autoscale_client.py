"""Stepped load for an autoscaling server, run inside the cluster's namespace:
``python autoscale_client.py URL``.

Waits for /health 200; then 1 client posting /v1/classify (3 texts each) for 1.5 s, 16 clients
until /health's ``autoscaling`` shows 2 ready replicas (and 1 s more), 1 client until it is back to
1 replica with none draining. Prints one JSON line: status code counts, answers with wrong
content, the replica states seen, and /health at the end.
"""

from __future__ import annotations

import collections
import json
import sys
import threading
import time

import httpx

from serve_client import post_classify, wait_ready


def main(url: str) -> None:
    wait_ready(url, 120)
    codes: collections.Counter = collections.Counter()
    wrong, wanted, seen = [0], [1], []

    def client(k: int) -> None:
        post_classify(url, k, lambda: k < wanted[0], codes, wrong)

    def until(what, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = httpx.get(url + "/health", timeout=10).json()["autoscaling"]
            seen.append({k: state[k] for k in ("starting", "ready", "draining")})
            if what(state):
                return
            time.sleep(0.1)

    threads = [threading.Thread(target=client, args=(0,))]
    threads[0].start()
    time.sleep(1.5)
    wanted[0] = 16
    threads += [threading.Thread(target=client, args=(k,)) for k in range(1, 16)]
    for t in threads[1:]:
        t.start()
    until(lambda s: s["ready"] == 2, 90)
    time.sleep(1.0)
    wanted[0] = 1
    until(lambda s: s["ready"] == 1 and s["starting"] == 0 and s["draining"] == 0, 60)
    wanted[0] = 0
    for t in threads:
        t.join()
    health = httpx.get(url + "/health", timeout=10).json()
    print(json.dumps({"codes": dict(codes), "wrong": wrong[0], "seen": seen, "health": health}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
