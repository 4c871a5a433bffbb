"""The order a real server batches inputs in, read from the ``Server-Timing`` header each answer
carries (``arrival`` and ``batch`` numbers): a long input among short ones is left behind by
length grouping only until the age limit (``--max-queue-age-ms``), then goes in the next batch."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from conftest import running_server

SHORT, LONG = "a b", "word " * 80  # ~1 and ~101 tokens (the test model counts characters / 4)


def timing(response: httpx.Response) -> dict[str, str]:
    """The Server-Timing header as {name: dur or desc}."""
    found = re.findall(r'([\w-]+);(?:dur=([\d.]+)|desc="(\d+)")', response.headers["server-timing"])
    return {name: dur or desc for name, dur, desc in found}


async def short_then_long_then_short(url: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """While one replica runs a first batch, queue a short input, a long one, then six short ones;
    returns the long one's timing and the later short ones'."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        def post(text: str) -> asyncio.Task:
            return asyncio.ensure_future(client.post("/v1/classify", json={"input": [text]}))
        blocker = post(SHORT)
        await asyncio.sleep(0.3)  # the replica is busy with it now (1.5 s)
        first = post(SHORT)
        await asyncio.sleep(0.05)
        long = post(LONG)
        await asyncio.sleep(0.05)
        later = [post(SHORT) for _ in range(6)]
        answers = await asyncio.gather(blocker, first, long, *later)
    assert [a.status_code for a in answers] == [200] * 9
    parts = [timing(a) for a in answers]
    arrival = [int(p["arrival"]) for p in parts]
    assert arrival[0] < arrival[1] < arrival[2] < min(arrival[3:])  # queued in the order sent
    assert int(parts[0]["batch"]) < min(int(p["batch"]) for p in parts[1:])  # the rest queued behind it
    return parts[2], parts[3:]


@pytest.mark.parametrize("age_ms", [1.0, None])
def test_a_long_input_past_the_age_limit_goes_in_the_next_batch(monkeypatch, age_ms):
    monkeypatch.setenv("PARAINFER_TEST_BATCH_MS", "1500")
    with running_server(task="classify", model="slow_models:fixed_cost", workers=1, max_batch_size=4,
                        max_queue_age_ms=age_ms) as url:
        long, later = asyncio.run(short_then_long_then_short(url))
    passed_by = [p for p in later if int(p["batch"]) < int(long["batch"])]
    if age_ms is not None:
        # every input waited past the limit when the replica freed: arrival order, whatever the length
        assert passed_by == [], (long, later)
        assert float(long["queue"]) > 0 and float(long["compute"]) >= 1500
    else:
        # without a limit, length grouping lets later short inputs go first (the oldest, short, one
        # takes them along), which is what the limit bounds
        assert len(passed_by) == 3, (long, later)
