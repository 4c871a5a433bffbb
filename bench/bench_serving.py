"""Load benchmark of ``parainfer serve``: closed and open loop, server settings side by side,
against the offline ceiling and peer servers, in one run.

First the ceiling: ``parainfer run`` on the same texts with the same replicas and dtype
(``serving_ceiling.py``); its parallel-phase texts/s is what serving can reach at best. Then for
each server setting (``--modes``: on = --max-batch-size 32; off = 1; tokens = 128 inputs within
--max-batch-tokens 8192; int8 = on with the ONNX Runtime int8 encoder) it starts
``python -m parainfer.serving`` on a free loopback port, waits for /health, then drives
POST /v1/embeddings with one real text per request (base64 embeddings); then each peer
(``--peers``: LitServe batched/unbatched, plain FastAPI; ``serving_peers.py``) the same way:

* closed loop: C clients, each sending its next request as soon as the last one is answered;
* open loop: requests started at a fixed rate R whatever the answers (latency under a given load).

Each point runs ``--duration`` seconds. Mean batch size, the batcher's real-token share (real /
B x longest) and the computed share (real / tokens the workers computed after their length
groups) come from the server's /metrics before and after the point; where each request's time
went (``queue``: waiting for its batch, ``compute``: its batch on the replica) from the
``Server-Timing`` header of each answer (p50 / p99 over the point; blank for a peer); the load
client's own CPU per request from ``time.process_time`` over the point (``--decode``: the
client also parses each answer and decodes its embedding, as a real client does). ``--src``
(repeatable) serves each mode from each source tree in turn, so an old tree and a new one are
measured side by side in one run. Prints a markdown table with each point's requests/s as a
fraction of the ceiling.

    python bench/bench_serving.py --duration 10 --texts $(parainfer datasets fetch mixed) --peers litserve
    python bench/bench_serving.py --texts mixed.jsonl --modes default --src /work/main/src --src src \
        --concurrency 1,8,32,64 --rates '' --no-ceiling     # an old tree vs this one
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import httpx
import numpy as np

from serving_ceiling import offline_ceiling

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
    computed_share: float = 1.0  # real tokens / tokens the workers computed (after length groups)
    ceiling: float = 0.0  # the offline job's texts/s on the same texts (0: not measured)
    encoding: str = "base64"  # the requests' encoding_format
    decode: bool = False  # parse each answer and decode its embedding (client CPU as a real client's)
    client_cpu_s: float = 0.0  # the load client's CPU seconds over the point (time.process_time)
    # per answered request, from the server's Server-Timing header (ms; absent for a peer)
    timings: list[dict[str, float]] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)  # per request, for --dump

    @property
    def rate(self) -> float:
        return self.codes.get(200, 0) / self.wall_s

    def row(self) -> str:
        ok = self.codes.get(200, 0)
        lat = sorted(self.latencies) or [float("nan")]
        p50 = lat[len(lat) // 2] * 1000
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000
        other = ", ".join(f"{n}x{'conn' if c < 0 else c}" for c, n in sorted(self.codes.items()) if c != 200)
        return (f"| {self.mode} | {self.load} | {ok} | {other or 0} | {ok / self.wall_s:.1f} | {p50:.0f} | {p99:.0f} "
                f"| {p99 / p50:.1f} | {self.server_part('queue')} | {self.server_part('compute')} "
                f"| {1000 * self.client_cpu_s / max(1, sum(self.codes.values())):.2f} "
                f"| {self.mean_batch:.1f} | {100 * self.real_share:.0f}% "
                f"| {100 * self.computed_share:.0f}% | {self.rate / self.ceiling if self.ceiling else float('nan'):.2f} |")

    def server_part(self, name: str) -> str:
        """'p50 / p99' ms of one Server-Timing part over the answered requests ('' for a peer)."""
        values = sorted(t[name] for t in self.timings if name in t)
        if not values:
            return ""
        return f"{values[len(values) // 2]:.0f} / {values[min(len(values) - 1, int(0.99 * len(values)))]:.0f}"


def load_texts(path: str | None, limit: int | None = None) -> list[str]:
    if not path:
        return BUILTIN_TEXTS
    with open(path) as f:
        return [json.loads(line)["text"] for line in f if line.strip()][:limit]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parainfer_cmd(args: argparse.Namespace, settings: list[str], port: int) -> list[str]:
    return [sys.executable, "-m", "parainfer.serving", "--task", args.task, "--workers", str(args.workers),
            "--device", args.device, "--dtype", args.dtype, "--port", str(port), "--max-wait-ms",
            str(args.max_wait_ms), "--log-level", "warning", *settings] + (["--model", args.model] if args.model else [])


PEERS = {"litserve": ["litserve", "--max-batch-size", "32", "--batch-timeout", "0.005"],
         "litserve-unbatched": ["litserve", "--max-batch-size", "1", "--batch-timeout", "0"],
         "fastapi": ["fastapi"]}


def peer_cmd(args: argparse.Namespace, peer: str, port: int) -> list[str]:
    return [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "serving_peers.py"),
            *PEERS[peer], "--workers", str(args.workers), "--port", str(port)]


@contextlib.contextmanager
def server(make_cmd: Callable[[int], list[str]], src: str | None = None) -> Iterator[str]:
    """A server subprocess (``make_cmd(port)``) on a free loopback port; SIGTERM at the end.
    ``src``: the source tree it imports parainfer from (PYTHONPATH), None: this environment's."""
    port = free_port()
    cmd = make_cmd(port)
    print("$", f"PYTHONPATH={src}" if src else "", " ".join(cmd[1:]), file=sys.stderr, flush=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **({"PYTHONPATH": os.path.abspath(src)} if src else {})}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
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
        os.killpg(proc.pid, signal.SIGTERM)  # the server and the worker processes it started
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


async def batch_counters(client: httpx.AsyncClient) -> tuple[float, ...]:
    """(inputs batched, batches, real tokens, padded tokens, computed tokens) so far, from /metrics
    (zeros for a peer without parainfer's metrics)."""
    response = await client.get("/metrics")
    text = response.text if response.status_code == 200 else ""

    def value(pattern: str) -> float:
        found = re.search(pattern + r" (\S+)", text, re.M)
        return float(found.group(1)) if found else 0.0
    return (value(r"^parainfer_batch_size_sum"), value(r"^parainfer_batch_size_count"),
            value(r'^parainfer_batch_tokens_total\{kind="real"\}'),
            value(r'^parainfer_batch_tokens_total\{kind="padded"\}'),
            value(r'^parainfer_batch_tokens_total\{kind="computed"\}'))


class Connection:
    """A minimal keep-alive HTTP/1.1 client for one connection: the load generator must cost far
    less CPU than the server it measures (httpx costs milliseconds a request on a busy 2-core box)."""

    IDLE_S = 2.0  # reconnect after this long unused: uvicorn closes keep-alive connections idle 5 s

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last_used = 0.0

    async def post(self, path: str, body: bytes) -> tuple[int, bytes, bytes]:
        """(status, response head, response body) of one POST."""
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
        content = await self.reader.readexactly(length)
        self.last_used = time.monotonic()
        if re.search(rb"(?i)connection: *close", head):
            self.close()
        return status, head, content

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def server_timing(head: bytes) -> dict[str, float]:
    """The ``dur`` values (ms) of a response's Server-Timing header, by name ({} without one)."""
    found = re.search(rb"(?i)\r\nserver-timing: *([^\r]*)", head)
    if not found:
        return {}
    return {m.group(1).decode(): float(m.group(2)) for m in re.finditer(rb"([\w-]+);dur=([\d.]+)", found.group(1))}


def decode_embedding(content: bytes) -> np.ndarray:
    """What a client does with an answer: parse the JSON, turn the embedding into float32
    (base64: its little-endian bytes; float: the list of numbers)."""
    vector = json.loads(content)["data"][0]["embedding"]
    if isinstance(vector, str):
        return np.frombuffer(base64.b64decode(vector), dtype="<f4")
    return np.asarray(vector, dtype=np.float32)


async def closed_loop(host: str, port: int | str, clients: int, end: float, texts: list[str], point: Point,
                      rng: random.Random) -> None:
    """``clients`` closed-loop clients, each on its own connection, sending requests (``one_request``)
    until ``time.perf_counter()`` passes ``end``."""
    async def loop() -> None:
        conn = Connection(host, int(port))
        while time.perf_counter() < end:
            await one_request(conn, texts, point, rng)
        conn.close()
    await asyncio.gather(*(loop() for _ in range(clients)))


async def one_request(conn: Connection, texts: list[str], point: Point, rng: random.Random) -> None:
    text = rng.choice(texts)
    body = json.dumps({"model": "bench", "input": [text], "encoding_format": point.encoding}).encode()
    t = time.perf_counter()
    try:
        code, head, content = await asyncio.wait_for(conn.post("/v1/embeddings", body), 60)
        if code == 200 and point.decode:
            decode_embedding(content)
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
        conn.close()
        code, head = -1, b""
    if code == 200:
        point.latencies.append(time.perf_counter() - t)
        point.timings.append(server_timing(head))
        point.records.append({"t": t, "latency_ms": 1000 * point.latencies[-1], "chars": len(text),
                              **point.timings[-1]})
    point.codes[code] = point.codes.get(code, 0) + 1


async def run_point(url: str, texts: list[str], point: Point, duration: float, clients: int = 0,
                    rate: float = 0.0) -> Point:
    rng = random.Random(0)
    host, port = url.rsplit("//", 1)[1].split(":")
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        before = await batch_counters(client)
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        end = t0 + duration
        if clients:
            await closed_loop(host, port, clients, end, texts, point, rng)
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
        point.client_cpu_s = time.process_time() - cpu0
        after = await batch_counters(client)
        point.mean_batch = (after[0] - before[0]) / max(1.0, after[1] - before[1])
        point.real_share = (after[2] - before[2]) / max(1.0, after[3] - before[3])
        point.computed_share = (after[2] - before[2]) / max(1.0, after[4] - before[4])
    return point


async def warm_up(url: str, texts: list[str]) -> None:
    await run_point(url, texts, Point("warm", "warm"), 2.0, clients=8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", help="JSONL with a 'text' field (e.g. `parainfer datasets fetch mixed`)")
    parser.add_argument("--limit", type=int, default=None, help="use the first N texts (ceiling and load alike)")
    parser.add_argument("--task", default="embed")
    parser.add_argument("--model", default=None)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (the server's --device)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load point")
    parser.add_argument("--concurrency", default="1,8,32,64", help="closed-loop client counts")
    parser.add_argument("--rates", default="25,50,100", help="open-loop requests/s ('' for none)")
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--modes", default="on,off", help="|".join(MODES))
    parser.add_argument("--peers", default="", help="|".join(PEERS) + " (comma-separated; '' for none)")
    parser.add_argument("--peer-concurrency", default="64", help="closed-loop client counts for the peers")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the offline `parainfer run` ceiling")
    parser.add_argument("--src", action="append", default=[], help="a source tree (its src/ folder) to serve "
                        "from; repeat it to compare trees side by side, each mode run from each (e.g. --src "
                        "/work/main/src --src src)")
    parser.add_argument("--encoding", default="base64", choices=["base64", "float"], help="the requests' "
                        "encoding_format")
    parser.add_argument("--decode", action="store_true", help="parse each answer and decode its embedding, as "
                        "a client would (the client CPU column then includes it)")
    parser.add_argument("--dump", default=None, help="write one JSON line per answered request here (latency, "
                        "text length, Server-Timing parts)")
    args = parser.parse_args()
    texts = load_texts(args.texts, args.limit)
    modes = [m for m in args.modes.split(",") if m]
    models = {m: MODES[m][MODES[m].index("--model") + 1] if "--model" in MODES[m] else args.model for m in modes}
    ceilings = {model: ceiling_of(args, texts, model) for model in dict.fromkeys([args.model, *models.values()])}
    trees = args.src or [None]
    runs = [(mode if len(trees) == 1 else f"{mode} @ {tree_name(src)}", src,
             lambda port, m=mode: parainfer_cmd(args, MODES[m], port), args.concurrency, args.rates,
             ceilings[models[mode]]) for mode in modes for src in trees]
    runs += [(peer, None, lambda port, p=peer: peer_cmd(args, p, port), args.peer_concurrency, "",
              ceilings[args.model]) for peer in args.peers.split(",") if peer]
    rows = []
    dump = open(args.dump, "w") if args.dump else contextlib.nullcontext()
    for name, src, make_cmd, concurrency, rates, ceiling in runs:
        with server(make_cmd, src) as url:
            asyncio.run(warm_up(url, texts))
            loads = [("closed", float(c)) for c in concurrency.split(",") if c]
            loads += [("open", float(r)) for r in rates.split(",") if r]
            for kind, x in loads:
                label = f"closed c={x:g}" if kind == "closed" else f"open {x:g}/s"
                point = Point(name, label, ceiling=ceiling, encoding=args.encoding, decode=args.decode)
                asyncio.run(run_point(url, texts, point, args.duration, clients=int(x) if kind == "closed" else 0,
                                      rate=x if kind == "open" else 0.0))
                rows.append(point.row())
                print(rows[-1], f"(load average {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
                if args.dump:
                    dump.writelines(json.dumps({"server": name, "load": label, **r}) + "\n" for r in point.records)
    if args.dump:
        dump.close()
    for model, ceiling in ceilings.items():
        print(f"offline ceiling ({model or 'default'} model): {ceiling:.1f} texts/s")
    print("| server | load | ok | errors | req/s | p50 ms | p99 ms | p99/p50 | queue p50 / p99 ms | compute p50 / p99 "
          "ms | client CPU ms/req | mean batch | real tokens (batcher) | real tokens (computed) | x ceiling |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


def tree_name(src: str | None) -> str:
    """A short name for a source tree: the folder holding its src/ (``/work/main/src`` -> main)."""
    path = os.path.abspath(src or ".")
    return os.path.basename(os.path.dirname(path)) if os.path.basename(path) == "src" else os.path.basename(path)


def ceiling_of(args: argparse.Namespace, texts: list[str], model: str | None) -> float:
    """The offline job's parallel-phase texts/s on ``texts`` (0 with --no-ceiling or built-in texts)."""
    if not args.texts or args.no_ceiling:
        return 0.0
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl") as f:
        f.writelines(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts))
        f.flush()
        found = offline_ceiling(f.name, args.task, args.workers, args.dtype, model)
    print(f"ceiling: {found['texts_per_s']:.1f} texts/s (parallel phase of `{found['command']}`, {len(texts)} "
          f"texts, load average {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
    return found["texts_per_s"]


MODES = {"default": [], "on": ["--max-batch-size", "32", "--max-batch-tokens", "0"], "off": ["--max-batch-size", "1"],
         "unsorted": ["--max-batch-size", "32", "--no-group-by-length", "--max-batch-tokens", "0"],
         "tokens": ["--max-batch-size", "128", "--max-batch-tokens", "8192"],
         "int8": ["--max-batch-size", "128", "--max-batch-tokens", "8192", "--model", "all-MiniLM-L6-v2-onnx-int8"]}


if __name__ == "__main__":
    main()
