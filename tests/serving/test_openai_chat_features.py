"""OpenAI chat features of ``--task generate`` through the official ``openai`` client against one
real server (SmolLM2-135M): ``n`` choices (seeded per choice, usage counting the prompt once,
streamed by index), a stop string split across two tokens, and tools (forced calls constrained
to the function's schema, tool messages in the input)."""

from __future__ import annotations

import json
import os

import httpx
import jsonschema
import openai
import pytest

from conftest import running_server

os.environ.setdefault("HF_HUB_OFFLINE", "1")
MESSAGES = [{"role": "user", "content": "Tell me a short story."}]
WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 16}}, "required": ["city"]}
TIME = {"type": "object", "properties": {"zone": {"$ref": "#/$defs/zone"}}, "required": ["zone"],
        "$defs": {"zone": {"enum": ["UTC", "CET", "PST"]}}}  # its ref resolves in the tool-call schema too
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                           "parameters": WEATHER}},
         {"type": "function", "function": {"name": "get_time", "description": "Time in a zone", "parameters": TIME}}]


@pytest.fixture(scope="module")
def client():
    threads = int(os.environ.get("PARAINFER_TEST_THREADS", "1"))
    with running_server(task="generate", max_num_seqs=8, threads_per_worker=threads) as base:
        with openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=120) as c:
            yield c


def test_n_choices_seeded_per_choice_usage_once_and_streamed_by_index(client):
    sampled = {"temperature": 1.0, "max_tokens": 5}
    health = str(client.base_url).rstrip("/").removesuffix("/v1") + "/health"
    hits = httpx.get(health).json()["engine_stats"]["prefix_cache_hit_tokens"]
    many = client.chat.completions.create(model="m", messages=MESSAGES, n=3, seed=11, **sampled)
    assert [c.index for c in many.choices] == [0, 1, 2]
    # the first request of the server: the choices after the first took the prompt's cached blocks
    assert httpx.get(health).json()["engine_stats"]["prefix_cache_hit_tokens"] > hits
    singles = [client.chat.completions.create(model="m", messages=MESSAGES, seed=11 + i, **sampled) for i in range(3)]
    # choice i samples with seed + i: each is the n=1 answer of that seed
    assert [c.message.content for c in many.choices] == [s.choices[0].message.content for s in singles]
    assert many.usage.prompt_tokens == singles[0].usage.prompt_tokens
    assert many.usage.completion_tokens == sum(s.usage.completion_tokens for s in singles)

    prompts = ["Once upon a time", "The best fruit is"]
    whole = client.completions.create(model="m", prompt=prompts, n=2, seed=5, **sampled)
    assert [c.index for c in whole.choices] == [0, 1, 2, 3]
    stream = client.completions.create(model="m", prompt=prompts, n=2, seed=5, stream=True,
                                       stream_options={"include_usage": True}, **sampled)
    texts, finished, usage = ["", "", "", ""], set(), None
    for chunk in stream:
        for c in chunk.choices:
            texts[c.index] += c.text
            if c.finish_reason:
                finished.add(c.index)
        usage = chunk.usage or usage
    assert texts == [c.text for c in whole.choices] and finished == {0, 1, 2, 3}
    assert usage.prompt_tokens == whole.usage.prompt_tokens == sum(
        client.completions.create(model="m", prompt=p, max_tokens=1).usage.prompt_tokens for p in prompts)

    chat_stream = client.chat.completions.create(model="m", messages=MESSAGES, n=2, seed=11, stream=True, **sampled)
    chat_texts = ["", ""]
    for chunk in chat_stream:
        for c in chunk.choices:
            chat_texts[c.index] += c.delta.content or ""
    assert chat_texts == [c.message.content for c in many.choices[:2]]

    with pytest.raises(openai.BadRequestError, match="n=17"):
        client.chat.completions.create(model="m", messages=MESSAGES, n=17)


def test_a_stop_string_split_across_two_tokens_ends_the_text_unseen(client):
    prompt = "The three primary colors are"
    ref = client.completions.create(model="m", prompt=prompt, max_tokens=16, temperature=0, logprobs=0)
    tokens, text = ref.choices[0].logprobs.tokens, ref.choices[0].text
    assert "".join(tokens) == text
    cut = None
    for k in range(len(tokens) - 1):  # the end of token k and the start of token k + 1, seen first there
        stop, boundary = tokens[k][-2:] + tokens[k + 1][:2], len("".join(tokens[:k + 1]))
        if len(stop) == 4 and text.find(stop) == boundary - 2:
            cut = (stop, boundary - 2)
            break
    assert cut is not None, f"no two joined tokens to split a stop string over in {tokens}"
    stop, at = cut
    got = client.completions.create(model="m", prompt=prompt, max_tokens=16, temperature=0, stop=[stop])
    assert got.choices[0].text == text[:at] and got.choices[0].finish_reason == "stop"
    chunks = [c.choices[0] for c in client.completions.create(model="m", prompt=prompt, max_tokens=16,
                                                              temperature=0, stop=[stop], stream=True) if c.choices]
    # nothing of the stop string was streamed, not even its first half (the end of token k)
    assert "".join(c.text for c in chunks) == text[:at] and chunks[-1].finish_reason == "stop"


def test_tools_forced_named_streamed_auto_and_tool_messages(client):
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    got = client.chat.completions.create(model="m", messages=question, tools=TOOLS, tool_choice="required",
                                         max_tokens=48, temperature=0)
    choice = got.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_") and call.function.name in ("get_weather", "get_time")
    jsonschema.validate(json.loads(call.function.arguments), WEATHER if call.function.name == "get_weather" else TIME)

    named = client.chat.completions.create(model="m", messages=question, tools=TOOLS, max_tokens=48, temperature=0,
                                           tool_choice={"type": "function", "function": {"name": "get_time"}})
    call = named.choices[0].message.tool_calls[0]
    assert call.function.name == "get_time" and json.loads(call.function.arguments)["zone"] in ("UTC", "CET", "PST")

    stream = client.chat.completions.create(model="m", messages=question, tools=TOOLS, max_tokens=48, temperature=0,
                                            tool_choice={"type": "function", "function": {"name": "get_time"}},
                                            stream=True)
    deltas = [c.choices[0] for c in stream if c.choices]
    assert deltas[0].delta.role == "assistant" and deltas[-1].finish_reason == "tool_calls"
    streamed = deltas[-1].delta.tool_calls[0]
    assert streamed.function.name == "get_time" and streamed.function.arguments == call.function.arguments

    # the model's answer to the tool's result: tool messages and earlier calls reach the chat template
    history = question + [{"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                          {"role": "tool", "tool_call_id": call.id, "content": '{"time": "12:00"}'}]
    auto = client.chat.completions.create(model="m", messages=history, tools=TOOLS, max_tokens=8, temperature=0)
    assert auto.choices[0].finish_reason in ("stop", "length", "tool_calls")
    none = client.chat.completions.create(model="m", messages=history, tools=TOOLS, tool_choice="none",
                                          max_tokens=8, temperature=0)
    assert none.choices[0].message.tool_calls is None and none.choices[0].message.content

    with pytest.raises(openai.BadRequestError, match="get_date"):
        client.chat.completions.create(model="m", messages=question, tools=TOOLS,
                                       tool_choice={"type": "function", "function": {"name": "get_date"}})
    with pytest.raises(openai.BadRequestError, match="needs tools"):
        client.chat.completions.create(model="m", messages=question, tool_choice="required")


def test_responses_answers_as_the_chat_path(client):
    chat = client.chat.completions.create(model="m", max_tokens=6, temperature=0, messages=[
        {"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name a colour."}])
    got = client.responses.create(model="m", instructions="Answer briefly.", input="Name a colour.",
                                  max_output_tokens=6, temperature=0)
    assert got.output_text == chat.choices[0].message.content and got.output[0].content[0].type == "output_text"
    assert (got.usage.input_tokens, got.usage.output_tokens) == (chat.usage.prompt_tokens, chat.usage.completion_tokens)
    assert got.status == ("incomplete" if chat.choices[0].finish_reason == "length" else "completed")
    parts = client.responses.create(model="m", max_output_tokens=6, temperature=0, input=[
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": [{"type": "input_text", "text": "Name a colour."}]}])
    assert parts.output_text == got.output_text
    with pytest.raises(openai.BadRequestError, match="stream"):
        client.responses.create(model="m", input="Hi", stream=True)
