"""Streaming generation benchmark of ``parainfer serve --task generate``.

Starts ``python -m parainfer.serving --task generate`` on a free loopback port (via
bench_serving.server), warms it up, then for each concurrency C runs C clients, each sending
streamed chat completions one after another (greedy, ``ignore_eos`` so every request makes
exactly ``--max-tokens`` tokens) until ``--requests`` have been sent. Per request it records
time to first token (send -> first content chunk) and the gaps between content chunks
(inter-token latency; one chunk is one token unless a stop string or partial UTF-8 holds text
back). Generated tokens/s = completion tokens (from the usage chunk) / wall time of the point.
Prints a markdown table.

    python bench/bench_serving_generate.py --concurrency 1,16 --requests 32 --max-tokens 64 [--texts vader.jsonl]
    python bench/bench_serving_generate.py --workers 1,2 --threads 1 ...   # one engine vs 2 replicas, one run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, field

import httpx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_serving import load_texts, parainfer_cmd, server  # noqa: E402


@dataclass
class Point:
    concurrency: int
    ttft: list[float] = field(default_factory=list)
    itl: list[float] = field(default_factory=list)
    tokens: int = 0
    ok: int = 0
    errors: int = 0
    wall_s: float = 0.0

    def row(self) -> str:
        def pct(xs: list[float], q: float) -> float:
            xs = sorted(xs) or [float("nan")]
            return 1000 * xs[min(len(xs) - 1, int(q * len(xs)))]
        return (f"| {self.concurrency} | {self.ok} | {self.errors} | {pct(self.ttft, .5):.0f} | {pct(self.ttft, .99):.0f} "
                f"| {pct(self.itl, .5):.0f} | {pct(self.itl, .99):.0f} | {self.tokens} | {self.wall_s:.1f} "
                f"| {self.tokens / self.wall_s:.1f} |")


async def one_request(client: httpx.AsyncClient, text: str, max_tokens: int, point: Point) -> None:
    body = {"model": "bench", "messages": [{"role": "user", "content": f"Write a short reply to: {text}"}],
            "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    last = None
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                point.errors += 1
                return
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    point.tokens += chunk["usage"]["completion_tokens"]
                if not any(c.get("delta", {}).get("content") for c in chunk.get("choices", [])):
                    continue
                now = time.perf_counter()
                if last is None:
                    point.ttft.append(now - t0)
                else:
                    point.itl.append(now - last)
                last = now
        point.ok += 1
    except httpx.HTTPError:
        point.errors += 1


async def run_point(url: str, texts: list[str], concurrency: int, requests: int, max_tokens: int) -> Point:
    point = Point(concurrency)
    todo = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency + 2)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        async def worker() -> None:
            for i in todo:
                await one_request(client, texts[i % len(texts)], max_tokens, point)
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        point.wall_s = time.perf_counter() - t0
    return point


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", help="JSONL with a 'text' field (e.g. VADER); default a built-in list")
    parser.add_argument("--model", default=None, help="local HF directory (default SmolLM2-135M-Instruct)")
    parser.add_argument("--concurrency", default="16", help="comma-separated client counts")
    parser.add_argument("--requests", type=int, default=32, help="requests per point")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--max-num-seqs", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="engine torch threads (--threads-per-worker)")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--workers", default="1", help="comma-separated engine counts, run one after another "
                        "(1: the engine in the server process; N > 1: N engine replicas in worker processes)")
    args = parser.parse_args()
    texts = load_texts(args.texts)
    settings = ["--max-num-seqs", str(args.max_num_seqs), "--request-timeout-s", "600"]
    if args.threads:
        settings += ["--threads-per-worker", str(args.threads)]
    rows = []
    for workers in [int(x) for x in args.workers.split(",") if x]:
        spawn = argparse.Namespace(task="generate", workers=workers, max_wait_ms=5.0, model=args.model, device="cpu",
                                   dtype=args.dtype)
        with server(lambda port: parainfer_cmd(spawn, settings, port)) as url:
            asyncio.run(run_point(url, texts, 2, 2, 8))  # warm-up
            for c in [int(x) for x in args.concurrency.split(",") if x]:
                point = asyncio.run(run_point(url, texts, c, max(c, args.requests), args.max_tokens))
                rows.append(f"| {workers} {point.row()}")
                print(rows[-1], file=sys.stderr, flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print("| engines | concurrency | ok | errors | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | tokens "
          "| wall s | generated tok/s |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
