"""Measure /health latency while something else runs (a model-free helper, imported by path)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable

import httpx


async def health_latencies_during(url: str, work: Awaitable[Any], period_s: float = 0.02) -> tuple[Any, list[float]]:
    """Run ``work`` while polling GET /health every ``period_s`` on its own connection;
    returns (work's result, the latency in seconds of every /health answered meanwhile).

    A poll that is still waiting when ``work`` ends is awaited too, so a frozen event loop
    shows as one long latency, never as a missing sample.
    """
    latencies: list[float] = []
    done = asyncio.Event()

    async def poll() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            await client.get("/health")  # connect first: the connection set-up is not measured
            while not done.is_set():
                t0 = time.perf_counter()
                r = await client.get("/health")
                latencies.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text
                await asyncio.sleep(period_s)

    poller = asyncio.create_task(poll())
    await asyncio.sleep(0.2)
    try:
        result = await work
    finally:
        done.set()
        await poller
    return result, latencies
