"""Autoscaling benchmark: a stepped closed-loop load (1 -> 32 -> 1 clients by default) against a
fixed 1-replica server, a fixed 2-replica server and an autoscaling 1..2 server, in one run.

Each server is ``python -m parainfer.serving --task embed`` (``bench_serving.server``: a free
loopback port, /health, SIGTERM at the end) with ``--threads-per-worker 1`` for all three, so the
replica count is the only difference. The load is ``bench_serving``'s: one real text per
POST /v1/embeddings on a minimal keep-alive client per simulated user. Per phase it prints
requests answered, errors, req/s, p50 and p99 latency and the replica counts seen; per server
the replica count over time (from /health's ``autoscaling`` key, sampled every 0.5 s) and the
replica-seconds it held (ready + starting + draining), the cost the autoscaler saves.

    python bench/bench_autoscale.py --phases 1:10,32:60,1:40 --upscale-delay-s 2 --downscale-delay-s 10
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from dataclasses import dataclass, field

import httpx

from bench_serving import BUILTIN_TEXTS, Point, closed_loop, load_texts, server


@dataclass
class Timeline:
    """(seconds since the load began, replicas starting, ready, draining) samples of /health."""

    samples: list[tuple[float, int, int, int]] = field(default_factory=list)

    def changes(self) -> str:
        """``t:ready[+starting][-draining]`` at each change, e.g. ``0s:1 31s:1+1 52s:2 95s:1-1 97s:1``."""
        out, last = [], None
        for t, starting, ready, draining in self.samples:
            state = f"{ready}" + (f"+{starting}" if starting else "") + (f"-{draining}" if draining else "")
            if state != last:
                out.append(f"{t:.0f}s:{state}")
                last = state
        return " ".join(out)

    def replica_seconds(self) -> float:
        """Integral of (starting + ready + draining) over the samples (seconds)."""
        total = 0.0
        for (t0, s, r, d), (t1, *_) in zip(self.samples, self.samples[1:]):
            total += (t1 - t0) * (s + r + d)
        return total

    def seen(self, t0: float, t1: float) -> str:
        counts = sorted({r + s for t, s, r, _ in self.samples if t0 <= t < t1})
        return "-".join(map(str, (counts[0], counts[-1]))) if counts and counts[0] != counts[-1] else \
            (str(counts[0]) if counts else "?")


async def sample(url: str, timeline: Timeline, t0: float, stop: asyncio.Event) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        while not stop.is_set():
            try:
                body = (await client.get("/health")).json()
                auto = body.get("autoscaling") or {}
                timeline.samples.append((time.perf_counter() - t0, auto.get("starting", 0),
                                         auto.get("ready", body.get("replicas_ready", 0)), auto.get("draining", 0)))
            except (httpx.HTTPError, ValueError):
                pass
            await asyncio.sleep(0.5)


async def stepped(url: str, texts: list[str], name: str, phases: list[tuple[int, float]]) -> tuple[list, Timeline]:
    """Run the phases back to back (clients stop at a phase's end, the next phase's start);
    returns ([(phase label, Point, start s, end s)], the replica timeline)."""
    host, port = url.rsplit("//", 1)[1].split(":")
    rng = random.Random(0)
    timeline, stop = Timeline(), asyncio.Event()
    t0 = time.perf_counter()
    sampler = asyncio.create_task(sample(url, timeline, t0, stop))
    results = []
    for clients, duration in phases:
        point = Point(name, f"{clients} client{'s' if clients > 1 else ''}, {duration:g} s")
        start = time.perf_counter()
        end = start + duration
        await closed_loop(host, port, clients, end, texts, point, rng)
        point.wall_s = time.perf_counter() - start
        results.append((point, start - t0, time.perf_counter() - t0))
    await asyncio.sleep(1.0)
    stop.set()
    await sampler
    return results, timeline


def row(point: Point, replicas: str) -> str:
    ok = point.codes.get(200, 0)
    lat = sorted(point.latencies) or [float("nan")]
    p50, p99 = lat[len(lat) // 2] * 1000, lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000
    errors = sum(n for c, n in point.codes.items() if c != 200)
    return f"| {point.mode} | {point.load} | {ok} | {errors} | {ok / point.wall_s:.1f} | {p50:.0f} | {p99:.0f} | {replicas} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", help="JSONL with a 'text' field (default: bench_serving's built-in texts)")
    parser.add_argument("--phases", default="1:10,32:60,1:40", help="clients:seconds, comma-separated")
    parser.add_argument("--servers", default="fixed1,fixed2,auto", help="which of fixed1, fixed2, auto to run")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--target-ongoing", type=float, default=2.0)
    parser.add_argument("--upscale-delay-s", type=float, default=2.0)
    parser.add_argument("--downscale-delay-s", type=float, default=10.0)
    parser.add_argument("--look-back-s", type=float, default=5.0)
    args = parser.parse_args()
    texts = load_texts(args.texts) if args.texts else BUILTIN_TEXTS
    phases = [(int(c), float(d)) for c, d in (p.split(":") for p in args.phases.split(","))]
    common = ["--task", "embed", "--dtype", args.dtype, "--threads-per-worker", "1", "--log-level", "warning"]
    settings = {"fixed1": ["--workers", "1"], "fixed2": ["--workers", "2"],
                "auto": ["--min-replicas", "1", "--max-replicas", "2", "--target-ongoing", str(args.target_ongoing),
                         "--upscale-delay-s", str(args.upscale_delay_s), "--downscale-delay-s",
                         str(args.downscale_delay_s), "--autoscale-look-back-s", str(args.look_back_s)]}
    rows, lines = [], []
    for name in args.servers.split(","):
        def cmd(port: int, extra: list[str] = settings[name]) -> list[str]:
            return [sys.executable, "-m", "parainfer.serving", *common, *extra, "--port", str(port)]
        with server(cmd) as url:
            results, timeline = asyncio.run(stepped(url, texts, name, phases))
        for point, t0, t1 in results:
            rows.append(row(point, timeline.seen(t0, t1)))
            print(rows[-1], file=sys.stderr, flush=True)
        lines.append(f"{name}: replicas over time {timeline.changes()}; replica-seconds "
                     f"{timeline.replica_seconds():.0f}")
        print(lines[-1], file=sys.stderr, flush=True)
    print("| server | phase | ok | errors | req/s | p50 ms | p99 ms | replicas |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
