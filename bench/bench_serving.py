"""Load benchmark of ``parainfer serve``: closed and open loop, dynamic batching on vs off.

For each server setting (batching on: --max-batch-size 32; off: --max-batch-size 1) it starts
``python -m parainfer.serving`` on a free loopback port, waits for /health, then drives
POST /v1/embeddings with one real text per request:

* closed loop: C clients, each sending its next request as soon as the last one is answered;
* open loop: requests started at a fixed rate R whatever the answers (latency under a given load).

Each point runs ``--duration`` seconds. Mean batch size comes from the server's /metrics
(``parainfer_batch_size`` sum/count before and after the point). Prints a markdown table.

    python bench/bench_serving.py --duration 10 [--texts $(parainfer datasets fetch vader)]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Iterator

import httpx

BUILTIN_TEXTS = [
    "Great movie!", "I did not like it.", "The service was slow but the food was excellent.",
    "Absolutely terrible, would not recommend to anyone I know.", "ok",
    "The new phone has a brilliant screen, long battery life and a camera that works well in low light, "
    "but it is heavier than the old one and the price went up again this year.",
    "What a waste of time.", "Loved the characters and the soundtrack.",
    "Shipping took three weeks and the box arrived damaged, although the item itself was fine.",
    "Meh.", "Best purchase I've made all year, hands down.",
    "The plot made no sense, the acting was wooden, and the ending dragged on for what felt like an hour "
    "after the story had already run out of things to say about its characters or its world.",
    "Fine, I guess.", "Customer support answered within minutes and solved the problem.",
    "It rained the whole weekend so we stayed in and read.", "Not bad at all!",
]


@dataclass
class Point:
    """One measured load point."""

    mode: str
    load: str
    latencies: list[float] = field(default_factory=list)
    codes: dict[int, int] = field(default_factory=dict)
    wall_s: float = 0.0
    mean_batch: float = 0.0
    real_share: float = 1.0  # real tokens / padded tokens (B x longest) in the model batches

    def row(self) -> str:
        ok = self.codes.get(200, 0)
        lat = sorted(self.latencies) or [float("nan")]
        p50 = lat[len(lat) // 2] * 1000
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000
        other = ", ".join(f"{n}x{'conn' if c < 0 else c}" for c, n in sorted(self.codes.items()) if c != 200)
        return (f"| {self.mode} | {self.load} | {ok} | {other or 0} | {ok / self.wall_s:.1f} | {p50:.0f} | {p99:.0f} "
                f"| {p99 / p50:.1f} | {self.mean_batch:.1f} | {100 * self.real_share:.0f}% |")


def load_texts(path: str | None) -> list[str]:
    if not path:
        return BUILTIN_TEXTS
    with open(path) as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(args: argparse.Namespace, settings: list[str]) -> Iterator[str]:
    """A server subprocess on a free loopback port; SIGTERM at the end."""
    port = free_port()
    cmd = [sys.executable, "-m", "parainfer.serving", "--task", args.task, "--workers", str(args.workers),
           "--device", args.device,
           "--port", str(port), "--max-wait-ms", str(args.max_wait_ms), "--log-level", "warning", *settings] + (["--model", args.model] if args.model else [])
    proc = subprocess.Popen(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, f"server exited with {proc.returncode}"
            assert time.monotonic() < deadline, "server not ready after 300 s"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


async def batch_counters(client: httpx.AsyncClient) -> tuple[float, ...]:
    """(inputs batched, batches, real tokens, padded tokens) so far, from /metrics."""
    text = (await client.get("/metrics")).text

    def value(pattern: str) -> float:
        return float(re.search(pattern + r" (\S+)", text, re.M).group(1))
    return (value(r"^parainfer_batch_size_sum"), value(r"^parainfer_batch_size_count"),
            value(r'^parainfer_batch_tokens_total\{kind="real"\}'),
            value(r'^parainfer_batch_tokens_total\{kind="padded"\}'))


class Connection:
    """A minimal keep-alive HTTP/1.1 client for one connection: the load generator must cost far
    less CPU than the server it measures (httpx costs milliseconds a request on a busy 2-core box)."""

    IDLE_S = 2.0  # reconnect after this long unused: uvicorn closes keep-alive connections idle 5 s

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last_used = 0.0

    async def post(self, path: str, body: bytes) -> int:
        if self.writer is not None and time.monotonic() - self.last_used > self.IDLE_S:
            self.close()  # the server may have closed it: a request on it would fail as a "conn" error
        self.last_used = time.monotonic()
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        await self.reader.readexactly(length)
        self.last_used = time.monotonic()
        if re.search(rb"(?i)connection: *close", head):
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def one_request(conn: Connection, texts: list[str], point: Point, rng: random.Random) -> None:
    body = json.dumps({"model": "bench", "input": [rng.choice(texts)], "encoding_format": "base64"}).encode()
    t = time.perf_counter()
    try:
        code = await asyncio.wait_for(conn.post("/v1/embeddings", body), 60)
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
        conn.close()
        code = -1
    if code == 200:
        point.latencies.append(time.perf_counter() - t)
    point.codes[code] = point.codes.get(code, 0) + 1


async def run_point(url: str, texts: list[str], point: Point, duration: float, clients: int = 0,
                    rate: float = 0.0) -> Point:
    rng = random.Random(0)
    host, port = url.rsplit("//", 1)[1].split(":")
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        before = await batch_counters(client)
        t0 = time.perf_counter()
        end = t0 + duration
        if clients:
            async def loop() -> None:
                conn = Connection(host, int(port))
                while time.perf_counter() < end:
                    await one_request(conn, texts, point, rng)
                conn.close()
            await asyncio.gather(*(loop() for _ in range(clients)))
        else:
            idle: list[Connection] = []

            async def send() -> None:
                conn = idle.pop() if idle else Connection(host, int(port))
                await one_request(conn, texts, point, rng)
                idle.append(conn)
            pending = []
            n = 0
            while (due := t0 + n / rate) < end:
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                pending.append(asyncio.create_task(send()))
                n += 1
            await asyncio.wait(pending, timeout=60)
            for conn in idle:
                conn.close()
        point.wall_s = time.perf_counter() - t0
        after = await batch_counters(client)
        point.mean_batch = (after[0] - before[0]) / max(1.0, after[1] - before[1])
        point.real_share = (after[2] - before[2]) / max(1.0, after[3] - before[3])
    return point


async def warm_up(url: str, texts: list[str]) -> None:
    await run_point(url, texts, Point("warm", "warm"), 2.0, clients=8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", help="JSONL with a 'text' field (e.g. `parainfer datasets fetch vader`)")
    parser.add_argument("--task", default="embed")
    parser.add_argument("--model", default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (the server's --device)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load point")
    parser.add_argument("--concurrency", default="1,8,32,64", help="closed-loop client counts")
    parser.add_argument("--rates", default="25,50,100", help="open-loop requests/s ('' for none)")
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--modes", default="on,off",
                        help="on: --max-batch-size 32; off: --max-batch-size 1; unsorted: 32, --no-group-by-length")
    args = parser.parse_args()
    texts = load_texts(args.texts)
    modes = {"on": ["--max-batch-size", "32"], "off": ["--max-batch-size", "1"],
             "unsorted": ["--max-batch-size", "32", "--no-group-by-length"]}
    rows = []
    for mode in args.modes.split(","):
        with server(args, modes[mode]) as url:
            asyncio.run(warm_up(url, texts))
            for c in [int(x) for x in args.concurrency.split(",") if x]:
                point = asyncio.run(run_point(url, texts, Point(mode, f"closed c={c}"), args.duration, clients=c))
                rows.append(point.row())
                print(rows[-1], file=sys.stderr, flush=True)
            for r in [float(x) for x in args.rates.split(",") if x]:
                point = asyncio.run(run_point(url, texts, Point(mode, f"open {r:g}/s"), args.duration, rate=r))
                rows.append(point.row())
                print(rows[-1], file=sys.stderr, flush=True)
    print("| batching | load | ok | errors | req/s | p50 ms | p99 ms | p99/p50 | mean batch | real tokens |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
