"""Replay the hostile-request attack classes (huge inputs, extreme sampling values, floods of streams and prompts)
against `parainfer serve`, for one or two source trees.

For each tree (``--src DIR``, repeatable: e.g. the old main's ``src`` and this one's) it starts
``python -m parainfer.serving`` as a subprocess with ``PYTHONPATH=DIR`` on a free loopback port and
reports, per attack: the status codes, the server's health after it, and the slowest /health
answer while it ran (polled every 20 ms on its own connection).

Attacks: embed: one 7.9 MB string; 1,024 inputs of 7.5 KB. generate (``--max-queue 8``):
``temperature`` 1e-300, ``top_p`` 1e-50, ``seed`` 2**70; 64 concurrent streams (how many admitted);
1.6 million one-character prompts; then a normal request.

    python bench/bench_serving_attacks.py --src /work/main/src --src src
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(src: str, *args: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": src, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "parainfer.serving", "--port", str(port), "--log-level", "error",
                             *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server of {src} did not start")


async def with_health_probe(url: str, work: Any) -> tuple[Any, float]:
    """(work's result, the slowest /health answer while it ran, in seconds)."""
    worst, done = 0.0, asyncio.Event()

    async def poll() -> None:
        nonlocal worst
        async with httpx.AsyncClient(timeout=300) as c:
            while not done.is_set():
                t0 = time.perf_counter()
                await c.get(url + "/health")
                worst = max(worst, time.perf_counter() - t0)
                await asyncio.sleep(0.02)
    task = asyncio.create_task(poll())
    await asyncio.sleep(0.1)
    try:
        result = await work
    finally:
        done.set()
        await task
    return result, worst


async def post_raw(url: str, path: str, raw: bytes) -> int:
    async with httpx.AsyncClient(timeout=300) as c:
        try:
            r = await c.post(url + path, content=raw, headers={"content-type": "application/json"})
            return r.status_code
        except httpx.HTTPError as e:
            return -1 if "Timeout" not in type(e).__name__ else -2


async def streams(url: str, n: int) -> dict[int, int]:
    body = {"prompt": "Count to one hundred:", "max_tokens": 64, "ignore_eos": True, "temperature": 0, "stream": True}
    codes: dict[int, int] = {}
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=httpx.Limits(max_connections=n + 4)) as c:
        async def one() -> None:
            async with c.stream("POST", "/v1/completions", json=body) as r:
                codes[r.status_code] = codes.get(r.status_code, 0) + 1
                async for _ in r.aiter_bytes():
                    pass
        await asyncio.gather(*(one() for _ in range(n)))
    return codes


def row(tree: str, attack: str, result: Any, worst: float, url: str) -> dict[str, Any]:
    try:
        health = httpx.get(url + "/health", timeout=30).json().get("status")
    except httpx.HTTPError:
        health = "no answer"
    out = {"tree": tree, "attack": attack, "result": result, "health_max_ms": round(worst * 1000), "health_after": health}
    print(json.dumps(out), flush=True)
    return out


def run_tree(src: str) -> None:
    proc, url = start(src, "--task", "embed", "--workers", "1")
    try:
        for name, body in (("one 7.9 MB string", {"input": "word " * 1_580_000}),
                           ("1024 inputs of 7.5 KB", {"input": ["a b c " * 1_250] * 1024})):
            status, worst = asyncio.run(with_health_probe(url, post_raw(url, "/v1/embeddings", json.dumps(body).encode())))
            row(src, f"embed: {name}", status, worst, url)
    finally:
        proc.terminate()
        proc.wait(60)
    proc, url = start(src, "--task", "generate", "--max-queue", "8", "--threads-per-worker", "1")
    try:
        for field, value in (("temperature", 1e-300), ("top_p", 1e-50), ("seed", 2**70)):
            raw = json.dumps({"prompt": "Hi", "max_tokens": 2, field: value}).encode()
            status, worst = asyncio.run(with_health_probe(url, post_raw(url, "/v1/completions", raw)))
            row(src, f"generate: {field}={value}", status, worst, url)
        codes, worst = asyncio.run(with_health_probe(url, streams(url, 64)))
        row(src, "generate: 64 concurrent streams, --max-queue 8", codes, worst, url)
        raw = json.dumps({"prompt": ["a"] * 1_600_000, "max_tokens": 1}).encode()
        status, worst = asyncio.run(with_health_probe(url, post_raw(url, "/v1/completions", raw)))
        row(src, "generate: 1.6 M one-character prompts", status, worst, url)
        raw = json.dumps({"prompt": "The capital of France is", "max_tokens": 3}).encode()
        status, worst = asyncio.run(with_health_probe(url, post_raw(url, "/v1/completions", raw)))
        row(src, "generate: a normal request after", status, worst, url)
    finally:
        proc.terminate()
        proc.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", action="append", required=True, help="a source tree (its src/ directory)")
    for src in parser.parse_args().src:
        run_tree(os.path.abspath(src))


if __name__ == "__main__":
    main()
