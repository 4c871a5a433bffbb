"""``--task generate`` through the official ``openai`` client against a real server (SmolLM2-135M).

Greedy text from the server must equal ``LLMEngine.generate`` run directly on the same prompt
ids; streamed deltas must join to the non-streamed text. One server for the whole file (the
model loads once; the first run on a machine converts it, about 40 s).
"""

from __future__ import annotations

import os
import re
import time

import httpx
import openai
import pytest

from conftest import running_server

os.environ.setdefault("HF_HUB_OFFLINE", "1")
KEY = "s3cret"
PROMPT = "The three primary colors are"
MESSAGES = [{"role": "user", "content": "Name one fruit."}]


@pytest.fixture(scope="module")
def gen_server():
    """A generate server with an API key and room for 2 sequences (to see the 429)."""
    threads = int(os.environ.get("PARAINFER_TEST_THREADS", "1"))
    with running_server(wait_ready=False, task="generate", api_key=KEY, max_queue=2, max_num_seqs=8,
                        threads_per_worker=threads) as url:
        first = httpx.get(url + "/health")
        deadline = time.monotonic() + 300
        while httpx.get(url + "/health").status_code != 200:
            assert time.monotonic() < deadline, "engine did not load"
            time.sleep(0.1)
        yield {"url": url, "first_health": first}


@pytest.fixture(scope="module")
def engine(reference_engine):
    """The same model run directly, for the exactness checks (conftest's, shared)."""
    return reference_engine(int(os.environ.get("PARAINFER_TEST_THREADS", "1")))


@pytest.fixture()
def client(gen_server):
    return openai.OpenAI(base_url=gen_server["url"] + "/v1", api_key=KEY, max_retries=0, timeout=120)


def greedy(engine, ids, max_tokens):
    from parainfer.generation import SamplingParams

    [result] = engine.generate([ids], SamplingParams(max_tokens=max_tokens))
    return result


def test_health_is_503_while_loading_then_200(gen_server):
    assert gen_server["first_health"].status_code == 503
    assert gen_server["first_health"].json()["status"] == "loading"
    body = httpx.get(gen_server["url"] + "/health").json()
    assert body["status"] == "ok" and body["max_model_len"] == 8192
    # generate is not deterministic unless asked (it would turn the prefix cache off): /health says so
    assert body["deterministic"] is False and body["batch_invariance"]["mode"] == "free"


def test_completion_greedy_equals_the_engine_run_directly(client, engine):
    got = client.completions.create(model="m", prompt=PROMPT, max_tokens=12, temperature=0)
    want = greedy(engine, engine.tokenizer.encode(PROMPT), 12)
    assert got.object == "text_completion" and got.model == "SmolLM2-135M-Instruct"
    assert got.choices[0].text == want.text and got.choices[0].finish_reason == want.finish_reason
    assert (got.usage.prompt_tokens, got.usage.completion_tokens) == (want.prompt_tokens, want.completion_tokens)
    assert got.usage.total_tokens == want.prompt_tokens + want.completion_tokens


def test_chat_greedy_equals_the_engine_on_the_chat_template(client, engine):
    got = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=10, temperature=0)
    want = greedy(engine, engine.format_chat(MESSAGES), 10)
    assert got.object == "chat.completion"
    assert got.choices[0].message.role == "assistant"
    assert got.choices[0].message.content == want.text
    assert got.choices[0].finish_reason in ("stop", "length") and got.choices[0].finish_reason == want.finish_reason
    assert got.usage.prompt_tokens == want.prompt_tokens and got.usage.completion_tokens == want.completion_tokens


def test_streamed_completion_joins_to_the_non_streamed_text(client):
    plain = client.completions.create(model="m", prompt=PROMPT, max_tokens=12, temperature=0)
    chunks = list(client.completions.create(model="m", prompt=PROMPT, max_tokens=12, temperature=0, stream=True))
    assert all(c.object == "text_completion" for c in chunks) and len(chunks) > 2
    assert "".join(c.choices[0].text for c in chunks) == plain.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks][-1] == "length"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_streamed_chat_sends_the_role_first_then_content_then_usage(client):
    plain = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=10, temperature=0)
    chunks = list(client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=10, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant" and not chunks[0].choices[0].delta.content
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == plain.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == plain.usage.total_tokens


def test_a_list_of_prompts_gives_one_choice_each_in_order(client, engine):
    prompts = [PROMPT, "Paris is the capital of"]
    got = client.completions.create(model="m", prompt=prompts, max_tokens=8, temperature=0)
    assert [c.index for c in got.choices] == [0, 1]
    want = [greedy(engine, engine.tokenizer.encode(p), 8) for p in prompts]
    assert [c.text for c in got.choices] == [w.text for w in want]
    assert got.usage.completion_tokens == sum(w.completion_tokens for w in want)


def test_token_id_prompt_and_seeded_sampling_repeat(client):
    ids = [504, 1345, 3994]
    first = client.completions.create(model="m", prompt=ids, max_tokens=6, temperature=0.9, seed=7)
    again = client.completions.create(model="m", prompt=ids, max_tokens=6, temperature=0.9, seed=7)
    assert first.usage.prompt_tokens == 3 and first.choices[0].text == again.choices[0].text


def test_prompt_plus_max_tokens_over_the_context_is_400_naming_both(client, engine):
    n = len(engine.tokenizer.encode(PROMPT))
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="m", prompt=PROMPT, max_tokens=9000)
    message = err.value.body["message"]
    assert f"prompt ({n} tokens)" in message and "max_tokens (9000)" in message and "8192" in message
    with pytest.raises(openai.BadRequestError, match="n=0"):
        client.chat.completions.create(model="m", messages=MESSAGES, n=0)


def test_api_key_is_required(gen_server):
    wrong = openai.OpenAI(base_url=gen_server["url"] + "/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.completions.create(model="m", prompt=PROMPT, max_tokens=1)
    assert httpx.post(gen_server["url"] + "/v1/chat/completions", json={"messages": MESSAGES}).status_code == 401


def test_disconnect_mid_stream_aborts_and_full_server_answers_429(gen_server):
    url, auth = gen_server["url"], {"Authorization": f"Bearer {KEY}"}
    body = {"prompt": PROMPT, "max_tokens": 2000, "temperature": 0, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", url + "/v1/completions", json=body, headers=auth, timeout=60) as r:
        assert r.status_code == 200
        lines = r.iter_lines()  # keep a reference: a dropped iterator closes the connection
        assert next(lines).startswith("data: ")  # the first chunk: the sequence runs in the engine
        busy = httpx.post(url + "/v1/completions", json={"prompt": ["a", "b"], "max_tokens": 1}, headers=auth)
        assert busy.status_code == 429 and int(busy.headers["Retry-After"]) >= 1
    deadline = time.monotonic() + 10  # the client left: the engine aborts the sequence
    while httpx.get(url + "/health").json()["sequences_running"]:
        assert time.monotonic() < deadline, "the sequence kept running after its client left"
        time.sleep(0.05)
    metrics = httpx.get(url + "/metrics").text
    assert float(re.search(r'generation_sequences_total\{finish_reason="abort"\} (\S+)', metrics).group(1)) >= 1
    for name in ("parainfer_time_to_first_token_seconds_bucket", "parainfer_inter_token_latency_seconds_bucket",
                 "parainfer_generated_tokens_total"):
        assert name in metrics
    assert 'route="/v1/completions",status="200"' in metrics


def test_routes_of_the_other_tasks_answer_400(gen_server, echo_server):
    auth = {"Authorization": f"Bearer {KEY}"}
    r = httpx.post(gen_server["url"] + "/v1/embeddings", json={"input": "x"}, headers=auth)
    assert r.status_code == 400 and "--task embed" in r.json()["error"]["message"]
    r = httpx.post(echo_server + "/v1/chat/completions", json={"messages": MESSAGES})
    assert r.status_code == 400 and "needs --task generate" in r.json()["error"]["message"]
