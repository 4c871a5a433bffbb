"""Requests for a ``serve --task generate`` server under test, run inside the cluster's namespace:
``python generate_client.py URL``.

Waits for /health 200, then sends each of 3 prompts 4 times at once through the official
``openai`` client (greedy, 2 streamed and 2 not), 12 requests in flight together. Then a fault:
two long requests (one per replica); once both run it prints ``RUNNING`` and the test kills one
replica's actor; it collects both outcomes (status codes), waits until the replica is back, and
prints one JSON line: every answer's text and finish reason per prompt, the outcomes, and
/health at the end.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
from serve_client import wait_ready  # this script's folder is on sys.path

PROMPTS = ["The three primary colors are", "Once upon a time", "The capital of France is"]


def ask(url: str, prompt: str, stream: bool) -> list:
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=180)
    if not stream:
        choice = client.completions.create(model="m", prompt=prompt, max_tokens=12, temperature=0).choices[0]
        return [choice.text, choice.finish_reason]
    text, reason = "", None
    for chunk in client.completions.create(model="m", prompt=prompt, max_tokens=12, temperature=0, stream=True):
        for choice in chunk.choices:
            text, reason = text + choice.text, choice.finish_reason or reason
    return [text, reason]


def long_request(url: str, prompt: str) -> str:
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=180)
    try:
        client.completions.create(model="m", prompt=prompt, max_tokens=32, temperature=0,
                                  extra_body={"ignore_eos": True})
        return "200"
    except openai.APIStatusError as exc:
        return str(exc.status_code)


def wait_until(url: str, ok, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        body = httpx.get(url + "/health", timeout=10).json()
        if ok(body):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


def main(url: str) -> None:
    wait_ready(url, 180)
    with ThreadPoolExecutor(12) as pool:
        futures = {p: [pool.submit(ask, url, p, k % 2 == 1) for k in range(4)] for p in PROMPTS}
        answers = {p: [f.result() for f in fs] for p, fs in futures.items()}
    with ThreadPoolExecutor(2) as pool:
        long = [pool.submit(long_request, url, p) for p in PROMPTS[:2]]
        # both sequences have their first token (one with none yet would move to the other replica)
        wait_until(url, lambda b: all(r["running"] and r["outstanding_tokens"] < 32 for r in b["replica_state"]), 120)
        print("RUNNING", flush=True)
        outcomes = sorted(f.result() for f in long)
    health = wait_until(url, lambda b: b["replicas_ready"] == 2, 240)
    print(json.dumps({"answers": answers, "outcomes": outcomes, "health": health}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
