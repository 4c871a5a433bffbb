"""The serving path and the engine replicas use the engine contract alone: a server whose two
replicas (worker processes) each hold ``contract_engine.EchoEngine``, a small engine that only
implements ``generation.engine_contract.GenerationEngine``, answers the official ``openai`` client."""

from __future__ import annotations

import inspect

import httpx
import openai
import pytest

from conftest import running_server
from contract_engine import EchoEngine

from parainfer.errors import UsageError
from parainfer.generation import LLMEngine
from parainfer.generation.engine_contract import GenerationEngine
from parainfer.generation.engines import build_engine, check_engine


def contract_methods() -> list[str]:
    return [n for n, v in inspect.getmembers(GenerationEngine, inspect.isfunction) if not n.startswith("_")]


def test_the_own_engine_and_the_echo_engine_have_every_contract_method():
    assert set(contract_methods()) >= {"add_request", "abort_request", "step", "has_unfinished", "fail_all",
                                       "check_fits", "format_chat", "generate"}
    for name in contract_methods():
        assert callable(getattr(LLMEngine, name)) and callable(getattr(EchoEngine, name))
    engine = build_engine("contract_engine:EchoEngine", None, max_num_seqs=4)
    assert isinstance(engine, GenerationEngine) and engine.config.max_num_seqs == 4
    with pytest.raises(UsageError, match="accepted: parainfer, llamacpp, vllm, auto"):
        check_engine("tensorrt")
    with pytest.raises(UsageError, match="cannot import"):
        build_engine("no_such_module:Engine", None)


def test_two_echo_replicas_serve_chat_completions_and_streams():
    with running_server(task="generate", engine="contract_engine:EchoEngine", workers=2, max_num_seqs=4) as url:
        health = httpx.get(url + "/health").json()
        assert health["status"] == "ok" and health["replicas_ready"] == 2 and health["engine"] == "echo"
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)
        texts = ["hello there", "second prompt", "a"]
        got = client.completions.create(model="m", prompt=texts, max_tokens=64, temperature=0)
        assert [c.text for c in got.choices] == texts and {c.finish_reason for c in got.choices} == {"stop"}
        assert got.usage.completion_tokens == sum(len(t.encode()) + 1 for t in texts)  # the bytes, then EOS
        cut = client.completions.create(model="m", prompt="abcdef", max_tokens=3)
        assert cut.choices[0].text == "abc" and cut.choices[0].finish_reason == "length"
        messages = [{"role": "user", "content": "hi"}]
        chat = client.chat.completions.create(model="m", messages=messages, max_tokens=64)
        assert chat.choices[0].message.content == "user: hi\nassistant: "
        chunks = list(client.chat.completions.create(model="m", messages=messages, max_tokens=64, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == chat.choices[0].message.content
        with pytest.raises(openai.BadRequestError, match="not supported by --engine echo"):
            client.chat.completions.create(model="m", messages=messages, response_format={"type": "json_object"})
        metrics = httpx.get(url + "/metrics").text
        assert "parainfer" in metrics


def test_an_engine_whose_package_is_missing_fails_in_one_line(tmp_path):
    """``run --engine llamacpp`` with llama_cpp hidden (as if not installed) and ``serve --engine vllm``
    (not installed on a CPU machine): exit 2, one line saying what to install."""
    import subprocess
    import sys

    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 1, "text": "hi"}\n')
    (tmp_path / "m.gguf").write_bytes(b"GGUF")  # never read: the engine is refused first
    hide = "import sys; sys.modules['llama_cpp'] = None; from parainfer.cli import main; sys.argv[0] = 'parainfer'; main()"
    runs = {"llama-cpp-python": [sys.executable, "-c", hide, "run", str(src), "-o", str(tmp_path / "o.jsonl"),
                                 "--task", "generate", "--model", str(tmp_path / "m.gguf"), "--engine", "llamacpp"],
            "pip install vllm": [sys.executable, "-m", "parainfer.cli", "serve", "--task", "generate",
                                 "--engine", "vllm"]}
    for hint, cmd in runs.items():
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and hint in lines[0], proc.stderr
