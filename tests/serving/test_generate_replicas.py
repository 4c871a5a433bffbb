"""``serve --task generate --workers 2``: two engine replicas in worker processes behind one
server, through the official ``openai`` client.

Greedy outputs must equal the one engine run directly (what the one-engine server is held to in
test_generate_api.py), streamed or not, with requests in flight on both replicas at once; the
router must spread them over both (per-replica counters in /metrics and /health); a replica
SIGKILLed mid-request fails its started requests with a clean error (never a hang), sends those
with no token yet to the other replica, and is restarted;
a client that leaves mid-stream has its sequence aborted.
"""

from __future__ import annotations

import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from conftest import running_server

os.environ.setdefault("HF_HUB_OFFLINE", "1")
PROMPTS = ["The three primary colors are", "Once upon a time", "The capital of France is", "def add(a, b):",
           "Water boils at", "My favourite fruit is"]
CHATS = [[{"role": "user", "content": "Name one fruit."}], [{"role": "user", "content": "Say hi."}]]


@pytest.fixture(scope="module")
def replicas():
    """A generate server with 2 replica processes (1 thread each)."""
    with running_server(wait_ready=False, task="generate", workers=2, max_queue=16, max_num_seqs=8,
                        threads_per_worker=1, request_timeout_s=400) as url:
        deadline = time.monotonic() + 300
        while httpx.get(url + "/health").status_code != 200:
            assert time.monotonic() < deadline, "replicas did not load"
            time.sleep(0.1)
        yield url


@pytest.fixture(scope="module")
def engine(reference_engine):
    """The same model as one engine run directly (the reference the one-engine server equals)."""
    return reference_engine(1)


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=120)


def _complete(url: str, prompt: str, stream: bool) -> tuple[str, str]:
    c = client(url)
    if not stream:
        got = c.completions.create(model="m", prompt=prompt, max_tokens=12, temperature=0)
        return got.choices[0].text, got.choices[0].finish_reason
    text, reason = "", None
    for chunk in c.completions.create(model="m", prompt=prompt, max_tokens=12, temperature=0, stream=True):
        for choice in chunk.choices:
            text += choice.text
            reason = choice.finish_reason or reason
    return text, reason


def _chat(url: str, messages: list[dict[str, str]], stream: bool) -> str:
    c = client(url)
    if not stream:
        return c.chat.completions.create(model="m", messages=messages, max_tokens=10, temperature=0
                                         ).choices[0].message.content
    return "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
        model="m", messages=messages, max_tokens=10, temperature=0, stream=True) if ch.choices)


def _routed(url: str) -> list[int]:
    text = httpx.get(url + "/metrics").text
    found = dict(re.findall(r'parainfer_generation_replica_requests_total\{replica="(\d+)"\} (\S+)', text))
    return [int(float(found[str(w)])) for w in range(2)]


def test_concurrent_streamed_and_plain_requests_equal_one_engine_and_use_both_replicas(replicas, engine):
    from parainfer.generation import SamplingParams

    before = _routed(replicas)
    with ThreadPoolExecutor(8) as pool:
        plain = [pool.submit(_complete, replicas, p, False) for p in PROMPTS]
        streamed = [pool.submit(_complete, replicas, p, True) for p in PROMPTS]
        chats = [pool.submit(_chat, replicas, m, s) for m in CHATS for s in (False, True)]
        plain, streamed, chats = ([f.result() for f in fs] for fs in (plain, streamed, chats))
    want = engine.generate([engine.tokenizer.encode(p) for p in PROMPTS], SamplingParams(max_tokens=12))
    assert plain == [(w.text, w.finish_reason) for w in want]
    assert streamed == plain
    want_chat = engine.generate([engine.format_chat(m) for m in CHATS], SamplingParams(max_tokens=10))
    assert chats == [w.text for w in want_chat for _ in (0, 1)]
    routed = [a - b for a, b in zip(_routed(replicas), before)]
    assert sum(routed) == 2 * len(PROMPTS) + 2 * len(CHATS) and min(routed) >= 3, routed
    state = httpx.get(replicas + "/health").json()
    assert state["replicas_ready"] == 2 and len({r["pid"] for r in state["replica_state"]}) == 2
    assert all(r["requests_routed"] >= 3 and r["running"] == 0 for r in state["replica_state"])
    # the replicas' prefix caches, summed into the server's /metrics: the chats share the
    # default system prompt, so some prompt tokens came from a cache (the counters arrive
    # asynchronously, within a drain period of the last step)
    deadline, hits = time.monotonic() + 10, 0.0
    while time.monotonic() < deadline and not hits:
        text = httpx.get(replicas + "/metrics").text
        hits = float(re.search(r"^parainfer_prefix_cache_hits_total (\S+)", text, re.M).group(1))
        time.sleep(0.2)
    computed = float(re.search(r'^parainfer_prefill_tokens_total\{kind="computed"\} (\S+)', text, re.M).group(1))
    assert hits > 0 and computed > 0, (hits, computed)


def test_structured_output_and_logprobs_through_replicas(replicas):
    """A JSON-schema chat with logprobs runs on a replica: valid JSON, one logprob per token;
    a schema that cannot compile is a 400 from the server's admission, not a replica's error."""
    import json

    schema = {"type": "object", "properties": {"fruit": {"type": "string", "enum": ["apple", "pear"]}},
              "required": ["fruit"], "additionalProperties": False}
    got = client(replicas).chat.completions.create(
        model="m", messages=CHATS[0], max_tokens=20, temperature=0, logprobs=True, top_logprobs=2,
        response_format={"type": "json_schema", "json_schema": {"name": "f", "schema": schema}})
    assert json.loads(got.choices[0].message.content)["fruit"] in ("apple", "pear")
    entries = got.choices[0].logprobs.content
    assert entries and all(e.logprob <= 0 and len(e.top_logprobs) == 2 for e in entries)
    with pytest.raises(openai.BadRequestError, match="cannot be compiled"):
        client(replicas).chat.completions.create(
            model="m", messages=CHATS[0], max_tokens=5,
            response_format={"type": "json_schema", "json_schema": {"name": "bad", "schema": {"type": "nope"}}})
    with pytest.raises(openai.BadRequestError, match="# -> # is a cycle with no way out"):  # checked by the server
        client(replicas).chat.completions.create(
            model="m", messages=CHATS[0], max_tokens=5,
            response_format={"type": "json_schema", "json_schema": {"name": "loop", "schema": {"$ref": "#"}}})
    text = httpx.get(replicas + "/metrics").text  # the server's admission compiled both schemas first
    assert float(re.search(r"^parainfer_grammar_compile_seconds_count (\S+)$", text, re.M).group(1)) >= 2
    assert float(re.search(r"^parainfer_grammar_schemas_rejected_total (\S+)$", text, re.M).group(1)) >= 1


def test_a_client_that_leaves_mid_stream_has_its_sequence_aborted_in_its_replica(replicas):
    def aborted() -> float:
        found = re.search(r'parainfer_generation_sequences_total\{finish_reason="abort"\} (\S+)',
                          httpx.get(replicas + "/metrics").text)
        return float(found.group(1))

    before = aborted()
    body = {"prompt": PROMPTS[0], "max_tokens": 300, "stream": True, "temperature": 0, "ignore_eos": True}
    with httpx.stream("POST", replicas + "/v1/completions", json=body, timeout=60) as response:
        chunks = 0
        for line in response.iter_lines():
            chunks += line.startswith("data: {")
            if chunks == 3:
                break  # leave mid-stream: the connection closes
    deadline = time.monotonic() + 30
    while True:
        state = httpx.get(replicas + "/health").json()["replica_state"]
        if aborted() == before + 1 and not any(r["running"] or r["outstanding_tokens"] for r in state):
            break
        assert time.monotonic() < deadline, state
        time.sleep(0.1)


def test_a_sequence_whose_replica_dies_before_its_first_token_runs_on_the_other(replicas, engine):
    from parainfer.generation import SamplingParams

    pid = httpx.get(replicas + "/health").json()["replica_state"][0]["pid"]
    os.kill(pid, signal.SIGSTOP)  # replica 0 takes requests but gives no token
    try:
        with ThreadPoolExecutor(4) as pool:
            got = [pool.submit(_complete, replicas, p, s) for p in PROMPTS[:2] for s in (False, True)]
            deadline = time.monotonic() + 60
            while not httpx.get(replicas + "/health").json()["replica_state"][0]["running"]:
                assert time.monotonic() < deadline, "no request reached replica 0"
                time.sleep(0.05)
            os.kill(pid, signal.SIGKILL)
            got = [f.result(timeout=120) for f in got]
    finally:
        os.kill(pid, signal.SIGKILL) if _alive(pid) else None
    want = engine.generate([engine.tokenizer.encode(p) for p in PROMPTS[:2]], SamplingParams(max_tokens=12))
    assert got == [(w.text, w.finish_reason) for w in want for _ in (0, 1)]  # none failed, same answers
    _wait_both_ready(replicas)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_both_ready(url: str) -> dict:
    deadline = time.monotonic() + 240
    while True:
        body = httpx.get(url + "/health").json()
        if body["replicas_ready"] == 2:
            return body
        assert time.monotonic() < deadline, f"replica 0 was not restarted: {body}"
        time.sleep(0.2)


def test_a_replica_killed_mid_request_fails_it_cleanly_and_is_restarted(replicas):
    c = client(replicas)
    state = httpx.get(replicas + "/health").json()["replica_state"]
    restarts = state[0]["restarts"]
    with ThreadPoolExecutor(2) as pool:  # one long request on each replica, then replica 0 dies
        long = [pool.submit(_long_request, replicas, p) for p in PROMPTS[:2]]
        deadline = time.monotonic() + 60
        # both have their first token (a sequence with none yet would be sent to the other replica):
        # a started sequence's outstanding tokens are below its max_tokens of 64
        while not all(r["running"] and r["outstanding_tokens"] < 64
                      for r in httpx.get(replicas + "/health").json()["replica_state"]):
            assert time.monotonic() < deadline, "requests did not start on both replicas"
            time.sleep(0.05)
        os.kill(state[0]["pid"], signal.SIGKILL)
        outcomes = [f.result(timeout=120) for f in long]
    assert sorted(outcomes) == ["200", "503"], outcomes  # the dead replica's failed, the other's ran on
    body = _wait_both_ready(replicas)
    assert body["replica_state"][0]["restarts"] == restarts + 1 and body["replica_state"][0]["pid"] != state[0]["pid"]
    assert f'parainfer_replica_restarts_total{{replica="0"}} {restarts + 1}.0' in httpx.get(replicas + "/metrics").text
    got = c.completions.create(model="m", prompt=PROMPTS[0], max_tokens=4, temperature=0)
    assert got.choices[0].finish_reason == "length"


def _long_request(url: str, prompt: str) -> str:
    """A 64-token greedy completion; returns the status the client saw ("200" or the error's)."""
    try:
        client(url).completions.create(model="m", prompt=prompt, max_tokens=64, temperature=0,
                                       extra_body={"ignore_eos": True})
        return "200"
    except openai.APIStatusError as exc:
        assert exc.response.headers.get("retry-after") and "request id" in exc.message, exc.message
        return str(exc.status_code)
