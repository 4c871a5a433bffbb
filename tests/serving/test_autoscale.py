"""``serve --min-replicas 1 --max-replicas 2``: the autoscaler adds a replica under load and removes
it (drained first) when the load goes, through the official ``openai`` client, losing and failing
nothing; bad ranges exit 2 with one line. The policy alone: ``test_autoscale_policy.py``."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openai
import pytest

from conftest import running_server
from parainfer.models.registry import build_predictor

os.environ.setdefault("HF_HUB_OFFLINE", "1")
TEXTS = [f"sentence number {i}: the replicas come and go, the answers stay the same" + " word" * (i % 7)
         for i in range(24)]
FAST = dict(min_replicas=1, max_replicas=2, target_ongoing=2.0, upscale_delay_s=0.5, downscale_delay_s=2.0,
            autoscale_look_back_s=1.0, threads_per_worker=1)


class SteppedLoad:
    """Closed-loop clients (each sends its next request when the last one answered) whose number
    can be changed while they run; every answer is kept with the text it was for."""

    def __init__(self, url: str, send) -> None:
        self.url, self.send = url, send
        self.wanted = 0
        self.answers: list[tuple[int, object]] = []
        self.failures: list[BaseException] = []
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=16)
        self._lock = threading.Lock()

    def clients(self, n: int) -> None:
        started, self.wanted = self.wanted, n
        for c in range(started, n):
            self._pool.submit(self._client, c)

    def _client(self, c: int) -> None:
        i = c
        while c < self.wanted and not self._stop.is_set():
            try:
                answer = self.send(i % len(TEXTS))
                with self._lock:
                    self.answers.append((i % len(TEXTS), answer))
            except BaseException as exc:  # noqa: BLE001 - every failure is a test failure, kept to report
                with self._lock:
                    self.failures.append(exc)
            i += 16

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True)


def autoscaling(url: str) -> dict:
    return httpx.get(url + "/health", timeout=10).json()["autoscaling"]


def wait_for(url: str, what, timeout_s: float) -> list[dict]:
    """Poll /health's ``autoscaling`` until ``what(state)``; returns the states seen."""
    seen, deadline = [], time.monotonic() + timeout_s
    while True:
        state = autoscaling(url)
        seen.append(state)
        if what(state):
            return seen
        assert time.monotonic() < deadline, f"autoscaling never reached the state; last: {state}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    predictor = build_predictor("embed", dtype="float32")
    predictor.load()
    return np.stack([np.asarray(o["embedding"], dtype=np.float32) for o in predictor.predict(TEXTS)])


def step_1_16_1(url: str, send) -> tuple[SteppedLoad, list[dict], dict, str]:
    """1 client, then 16 until the second replica is routed to (and a second more), then 1 until
    the server is back to one replica; returns (the load, /health states seen while scaling
    down, the last /health autoscaling state, /metrics)."""
    assert autoscaling(url)["replicas"] == 1 and autoscaling(url)["enabled"] is True
    load = SteppedLoad(url, send)
    try:
        load.clients(1)
        time.sleep(1.5)
        assert autoscaling(url)["replicas"] == 1  # 1 client: at most 1 unit of work per replica
        load.clients(16)
        wait_for(url, lambda s: s["ready"] == 2, 120)  # the second replica loaded and routed to
        time.sleep(1.0)  # both take work
        load.clients(1)
        seen = wait_for(url, lambda s: s["replicas"] == 1 and s["draining"] == 0 and s["ready"] == 1, 60)
        time.sleep(0.5)
    finally:
        load.close()
    return load, seen, autoscaling(url), httpx.get(url + "/metrics").text


def check_scaled_once_each_way(load: SteppedLoad, seen: list[dict], final: dict, metrics: str) -> None:
    assert not load.failures, load.failures[:3]
    assert final["scale_ups"] == 1 and final["scale_downs"] == 1, final
    assert any(s["draining"] == 1 or s["replicas"] == 2 for s in seen), "the replica was removed without draining"
    assert 'parainfer_autoscaler_scale_ups_total{reason="load_above_target"} 1.0' in metrics
    assert 'parainfer_autoscaler_scale_downs_total{reason="load_below_target"} 1.0' in metrics
    assert 'parainfer_replicas{state="ready"} 1.0' in metrics


def test_embed_server_scales_1_2_1_under_a_stepped_load_without_losing_a_request(reference):
    with running_server(task="embed", dtype="float32", **FAST) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)

        def send(i: int) -> np.ndarray:
            got = client.embeddings.create(model="m", input=TEXTS[i], encoding_format="float")
            return np.asarray(got.data[0].embedding, dtype=np.float32)

        load, seen, final, metrics = step_1_16_1(url, send)
    check_scaled_once_each_way(load, seen, final, metrics)
    assert len(load.answers) > 50
    for i, got in load.answers:  # every answer is the text's own embedding, whichever replica ran it
        cosine = float(got @ reference[i] / np.linalg.norm(got) / np.linalg.norm(reference[i]))
        assert cosine >= 1 - 1e-4, (i, cosine)


def test_generate_server_scales_1_2_1_and_every_completion_equals_one_engine(reference_engine):
    from parainfer.generation import SamplingParams

    prompts = [f"Count from {i} to {i + 5}:" for i in range(len(TEXTS))]
    engine = reference_engine(1)
    want = [(w.text, w.finish_reason) for w in engine.generate([engine.tokenizer.encode(p) for p in prompts],
                                                                SamplingParams(max_tokens=6))]
    with running_server(task="generate", max_num_seqs=16, request_timeout_s=120, **FAST) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=120)

        def send(i: int) -> tuple[str, str]:
            got = client.completions.create(model="m", prompt=prompts[i], max_tokens=6, temperature=0)
            return got.choices[0].text, got.choices[0].finish_reason

        load, seen, final, metrics = step_1_16_1(url, send)
    check_scaled_once_each_way(load, seen, final, metrics)
    assert len(load.answers) > 30
    assert all(got == want[i] for i, got in load.answers), [(i, got, want[i]) for i, got in load.answers
                                                            if got != want[i]][:3]


@pytest.mark.parametrize("options, message", [
    (["--min-replicas", "3", "--max-replicas", "2"], "--min-replicas 3 is above --max-replicas 2"),
    (["--max-replicas", "0"], "--max-replicas must be >= 1"),
    (["--min-replicas", "-1", "--max-replicas", "2"], "--min-replicas must be >= 1"),
    (["--min-replicas", "2"], "--min-replicas 2 needs --max-replicas"),
])
def test_bad_replica_ranges_exit_2_with_one_line(options: list[str], message: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-m", "parainfer.cli", "serve", "--task", "classify", "--model",
                           "parainfer.testing:echo", *options], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and message in proc.stderr, proc.stderr
