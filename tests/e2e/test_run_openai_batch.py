"""`parainfer run BATCH.jsonl` on an OpenAI batch file mixing chat, completions and
embeddings: one result line per request in input order, bodies shaped as `parainfer serve`
answers them, per-line 400s, malformed and duplicate lines in the errors file, a rerun that
finds the job complete. Real models: SmolLM2-135M (4-token answers) and the built-in MiniLM."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from parainfer.models.hf_embed import HFEmbedPredictor, default_embed_model_dir
from parainfer.openai.protocol import ChatCompletionResponse, CompletionResponse, EmbeddingResponse
from tests.conftest import read_jsonl

CHAT = {"messages": [{"role": "user", "content": "Name a fruit."}], "max_tokens": 4, "temperature": 0}
SAMPLED = {"messages": [{"role": "user", "content": "Tell me a story."}], "max_completion_tokens": 4,
           "temperature": 1.0, "top_p": 0.9, "seed": 7}
LINES = [
    ("chat", "/v1/chat/completions", {"model": "SmolLM2-135M-Instruct", **CHAT}),
    ("emb", "/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": ["hello world", "good morning"]}),
    ("text", "/v1/completions", {"prompt": "The capital of France is", "max_tokens": 3, "temperature": 0,
                                 "stop": ["\n"]}),
    ("seed-a", "/v1/chat/completions", SAMPLED),
    ("seed-b", "/v1/chat/completions", SAMPLED),
    ("b64", "/v1/embeddings", {"input": "hello world", "encoding_format": "base64"}),
    ("gpt", "/v1/chat/completions", {"model": "gpt-4o", **CHAT}),
    ("n2", "/v1/chat/completions", {**CHAT, "n": 2}),
    ("bad-temp", "/v1/chat/completions", {**CHAT, "temperature": "hot"}),
    ("bad-max", "/v1/chat/completions", {**CHAT, "max_tokens": "many"}),
    ("emb", "/v1/embeddings", {"input": "duplicate id"}),
]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-m", "parainfer.cli", "run", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def test_a_mixed_batch_file_gets_openai_result_lines_in_input_order(tmp_path: Path) -> None:
    src, out = tmp_path / "batch.jsonl", tmp_path / "results.jsonl"
    text = [json.dumps({"custom_id": c, "method": "POST", "url": u, "body": b}) for c, u, b in LINES]
    text.insert(3, '{"custom_id": "broken", "method": "POST"')
    src.write_text("\n".join(text) + "\n")
    proc = run_cli(str(src), "--output", str(out), "--workers", "1", "--quiet")
    assert proc.returncode == 1, proc.stderr  # 1: some lines failed (the malformed and the duplicate)
    rows = read_jsonl(out)
    assert [r["custom_id"] for r in rows] == [c for c, _, _ in LINES[:-1]]
    by_id = {r["custom_id"]: r for r in rows}
    for r in rows:
        assert r["id"].startswith("batch_req_") and r["error"] is None
        assert r["response"]["request_id"].startswith("req_")
    status = {c: r["response"]["status_code"] for c, r in by_id.items()}
    assert status == {"chat": 200, "emb": 200, "text": 200, "seed-a": 200, "seed-b": 200, "b64": 200, "gpt": 400,
                      "n2": 400, "bad-temp": 422, "bad-max": 422}
    body = {c: r["response"]["body"] for c, r in by_id.items()}
    chat = ChatCompletionResponse.model_validate(body["chat"])
    assert chat.model == "SmolLM2-135M-Instruct" and 1 <= chat.usage.completion_tokens <= 4
    assert chat.choices[0].message.content.strip()
    text_completion = CompletionResponse.model_validate(body["text"])
    assert "\n" not in text_completion.choices[0].text and text_completion.usage.completion_tokens <= 3
    # same seed, same sampling options: the same text, whichever batch the lines shared
    assert body["seed-a"]["choices"][0]["message"] == body["seed-b"]["choices"][0]["message"]
    emb = EmbeddingResponse.model_validate(body["emb"])
    assert [d.index for d in emb.data] == [0, 1] and emb.usage.prompt_tokens > 4
    embedder = HFEmbedPredictor(default_embed_model_dir())
    embedder.load()
    want = np.asarray(embedder.predict(["hello world"])[0]["embedding"], dtype=np.float32)
    assert np.allclose(emb.data[0].embedding, want, atol=1e-5)
    b64 = np.frombuffer(base64.b64decode(body["b64"]["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(b64, want, atol=1e-5)
    assert body["gpt"]["error"]["code"] == "model_not_found" and "gpt-4o" in body["gpt"]["error"]["message"]
    assert body["n2"]["error"]["param"] == "n" and body["bad-temp"]["error"]["param"] == "temperature"
    errors = read_jsonl(tmp_path / "results.errors.jsonl")
    assert [e["line"] for e in errors] == [4, 12]
    assert "not valid JSON" in errors[0]["reason"] and "duplicate custom_id 'emb'" in errors[1]["reason"]
    again = run_cli(str(src), "--output", str(out), "--workers", "1")
    assert again.returncode == 1 and "already complete" in again.stderr
    assert read_jsonl(out) == rows
