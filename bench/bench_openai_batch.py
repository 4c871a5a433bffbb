"""OpenAI batch files: ``parainfer run`` against the same requests sent one by one to
``parainfer serve``, and online latency with and without a background /v1/batches batch.

Part 1 (throughput): a mixed batch file (half chat completions with ``max_tokens`` M, half
embeddings, texts from the VADER dataset when fetched, else built-in) goes through
``parainfer run FILE`` (W workers, each with both models), then the same requests are sent
to two servers (``serve --task generate`` and ``serve --task embed --workers W``, running
side by side) by a closed-loop client at concurrency C, each to the server of its url.
Reported: requests/s, generated tokens/s, wall.

Part 2 (priority): an embedding server; an open-loop online load of R requests/s for D
seconds, measured alone, then again while a B-line embedding batch runs through /v1/batches.
Reported: online p50/p99 both times (and their ratio) and the batch lines done meanwhile.

Part 3 (embeddings file): N texts (VADER) as an OpenAI batch file of ``/v1/embeddings`` lines
with OpenAI's model name, through ``parainfer run FILE``, against the same texts through
``parainfer run --task embed`` (W workers each, alternated R times). Reported from each run's
report: start-up, parallel phase, tokens (exact, the workers' counts), tokens/s in the parallel
phase and padding efficiency; the ratio of the best tokens/s of each.

    python bench/bench_openai_batch.py --requests 2000 --concurrency 32 --rate 20 --duration 20
    python bench/bench_openai_batch.py --only embed-file --file-texts 600 --repeats 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from bench_serving import BUILTIN_TEXTS, free_port  # noqa: E402


def texts(n: int) -> list[str]:
    try:
        from parainfer.platform import datasets

        rows = [json.loads(x) for x in Path(datasets.fetch("vader")).read_text().splitlines()[:n]]
        return [r["text"] for r in rows] or BUILTIN_TEXTS
    except Exception:  # noqa: BLE001 - offline without the dataset: built-in texts
        return BUILTIN_TEXTS


def mixed_requests(n: int, max_tokens: int) -> list[dict[str, Any]]:
    pool = texts(n)
    out = []
    for i in range(n):
        text = pool[i % len(pool)]
        if i % 2:
            out.append({"custom_id": f"r{i}", "method": "POST", "url": "/v1/embeddings", "body": {"input": text}})
        else:
            out.append({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": {
                "messages": [{"role": "user", "content": f"Reply briefly: {text}"}], "max_tokens": max_tokens,
                "temperature": 0}})
    return out


@contextlib.contextmanager
def serving(*args: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "parainfer.cli", "serve", "--port", str(port), "--log-level",
                             "warning", *args], env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=120)


def run_file(path: Path, workers: int) -> dict[str, Any]:
    out = path.with_suffix(".out.jsonl")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "parainfer.cli", "run", str(path), "-o", str(out), "--workers",
                    str(workers), "--overwrite", "--quiet"], check=False)
    wall = time.perf_counter() - t0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    tokens = sum(r["response"]["body"].get("usage", {}).get("completion_tokens", 0) for r in rows)
    ok = sum(r["response"]["status_code"] == 200 for r in rows)
    return {"ok": ok, "wall_s": wall, "completion_tokens": tokens}


async def closed_loop(requests: list[dict[str, Any]], urls: dict[str, str], concurrency: int) -> dict[str, Any]:
    todo, stats = iter(requests), {"ok": 0, "completion_tokens": 0}
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=concurrency + 2)) as client:
        async def worker() -> None:
            for req in todo:
                r = await client.post(urls[req["url"]] + req["url"], json=req["body"])
                stats["ok"] += r.status_code == 200
                stats["completion_tokens"] += r.json().get("usage", {}).get("completion_tokens", 0)
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        stats["wall_s"] = time.perf_counter() - t0
    return stats


async def open_loop(url: str, rate: float, duration: float) -> list[float]:
    pool, latencies = texts(500), []
    rng = random.Random(0)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=200)) as client:
        async def one() -> None:
            t0 = time.perf_counter()
            r = await client.post("/v1/embeddings", json={"input": rng.choice(pool)})
            if r.status_code == 200:
                latencies.append(time.perf_counter() - t0)
        tasks, t_start = [], time.perf_counter()
        for i in range(int(rate * duration)):
            await asyncio.sleep(max(0.0, t_start + i / rate - time.perf_counter()))
            tasks.append(asyncio.ensure_future(one()))
        await asyncio.gather(*tasks)
    return latencies


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return 1000 * xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def part_priority(args: argparse.Namespace, tmp: Path) -> None:
    import openai

    lines = [{"custom_id": f"b{i}", "method": "POST", "url": "/v1/embeddings", "body": {"input": t}}
             for i, t in enumerate(texts(args.batch_lines) * (1 + args.batch_lines // 500))][:args.batch_lines]
    src = tmp / "background.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in lines))
    with serving("--task", "embed", "--workers", str(args.workers), "--data-dir", str(tmp / "data"),
                 "--batch-concurrency", str(args.batch_concurrency)) as url:
        asyncio.run(open_loop(url, args.rate, 3))  # warm-up
        alone = asyncio.run(open_loop(url, args.rate, args.duration))
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        batch = client.batches.create(input_file_id=client.files.create(file=src.open("rb"), purpose="batch").id,
                                      endpoint="/v1/embeddings", completion_window="24h")
        time.sleep(1.0)
        before = client.batches.retrieve(batch.id).request_counts.completed
        shared = asyncio.run(open_loop(url, args.rate, args.duration))
        after = client.batches.retrieve(batch.id).request_counts.completed
        client.batches.cancel(batch.id)
    print(f"\nonline embeddings, open loop {args.rate} req/s for {args.duration} s, {args.workers} replicas, "
          f"--batch-concurrency {args.batch_concurrency}")
    print("| online load | requests | p50 ms | p99 ms |\n| --- | --- | --- | --- |")
    print(f"| alone | {len(alone)} | {pct(alone, .5):.1f} | {pct(alone, .99):.1f} |")
    print(f"| with a background batch | {len(shared)} | {pct(shared, .5):.1f} | {pct(shared, .99):.1f} |")
    print(f"ratio p50 {pct(shared, .5) / pct(alone, .5):.2f}x, p99 {pct(shared, .99) / pct(alone, .99):.2f}x; "
          f"batch lines done during the shared window: {after - before} "
          f"({(after - before) / args.duration:.1f}/s)")


def part_throughput(args: argparse.Namespace, tmp: Path) -> None:
    requests = mixed_requests(args.requests, args.max_tokens)
    src = tmp / "mixed.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in requests))
    ran = run_file(src, args.workers)
    with serving("--task", "generate", "--request-timeout-s", "600") as gen_url, \
            serving("--task", "embed", "--workers", str(args.workers), "--data-dir", str(tmp / "d2")) as emb_url:
        urls = {"/v1/chat/completions": gen_url, "/v1/embeddings": emb_url}
        asyncio.run(closed_loop(requests[:8], urls, 4))  # warm-up
        served = asyncio.run(closed_loop(requests, urls, args.concurrency))
    print(f"\n{args.requests} requests (half chat, max_tokens {args.max_tokens}; half embeddings)")
    print("| path | ok | wall s | requests/s | generated tokens/s |\n| --- | --- | --- | --- | --- |")
    for name, s in ((f"parainfer run ({args.workers} workers, start included)", ran),
                    (f"serve, closed loop c={args.concurrency}", served)):
        print(f"| {name} | {s['ok']} | {s['wall_s']:.1f} | {s['ok'] / s['wall_s']:.1f} | "
              f"{s['completion_tokens'] / s['wall_s']:.1f} |")
    print(f"run / serve requests/s: {served['wall_s'] / ran['wall_s']:.2f}x")


def run_report(src: Path, workers: int, *extra: str) -> dict[str, Any]:
    """``parainfer run SRC`` (W workers, ``extra`` options); its run report."""
    report = src.with_suffix(".report.json")
    subprocess.run([sys.executable, "-m", "parainfer.cli", "run", str(src), "-o", str(src.with_suffix(".out.jsonl")),
                    "--workers", str(workers), "--overwrite", "--quiet", "--report", str(report), *extra], check=True)
    return json.loads(report.read_text())


def part_embed_file(args: argparse.Namespace, tmp: Path) -> None:
    pool = texts(args.file_texts)
    pool = (pool * (1 + args.file_texts // max(1, len(pool))))[:args.file_texts]
    batch, records = tmp / "embeddings.jsonl", tmp / "texts.jsonl"
    batch.write_text("".join(json.dumps({"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings", "body": {
        "model": "text-embedding-3-small", "input": t}}) + "\n" for i, t in enumerate(pool)))
    records.write_text("".join(json.dumps({"id": f"e{i}", "text": t}) + "\n" for i, t in enumerate(pool)))
    runs: dict[str, list[dict[str, Any]]] = {"batch file": [], "--task embed": []}
    for _ in range(args.repeats):  # alternated, so that a change in the machine's load hits both
        runs["--task embed"].append(run_report(records, args.workers, "--task", "embed"))
        runs["batch file"].append(run_report(batch, args.workers))
    print(f"\n{len(pool)} texts, {args.workers} workers: an OpenAI embeddings batch file vs --task embed")
    print("| path | start-up s | parallel s | real tokens | tokens/s (parallel) | padding efficiency |\n"
          "| --- | --- | --- | --- | --- | --- |")
    best = {}
    for name, reps in runs.items():
        for r in reps:
            print(f"| {name} | {r['t_startup_s']:.2f} | {r['t_parallel_s']:.2f} | {r['real_tokens']} | "
                  f"{r['real_tokens'] / r['t_parallel_s']:.0f} | {r['padding_efficiency']:.2f} |")
        best[name] = max(r["real_tokens"] / r["t_parallel_s"] for r in reps)
    print(f"tokens/s, best of {args.repeats}: --task embed {best['--task embed']:.0f}, batch file "
          f"{best['batch file']:.0f}: --task embed / batch file = {best['--task embed'] / best['batch file']:.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rate", type=float, default=20.0, help="online requests/s in part 2")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per online window in part 2")
    p.add_argument("--batch-lines", type=int, default=2000)
    p.add_argument("--batch-concurrency", type=int, default=4)
    p.add_argument("--file-texts", type=int, default=600, help="texts in part 3")
    p.add_argument("--repeats", type=int, default=2, help="runs of each path in part 3")
    p.add_argument("--only", choices=("throughput", "priority", "embed-file"), default=None)
    args = p.parse_args()
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "priority"):
            part_priority(args, Path(tmp))
        if args.only in (None, "throughput"):
            part_throughput(args, Path(tmp))
        if args.only in (None, "embed-file"):
            part_embed_file(args, Path(tmp))
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
