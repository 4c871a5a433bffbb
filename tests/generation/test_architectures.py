"""Qwen2, Qwen3, Mistral and Gemma 3 in the engine's own forward: greedy tokens equal HF ``generate``.

Each architecture is a tiny seeded random-weight HF model (2 layers, hidden 64, SmolLM2's
tokenizer and vocabulary) saved to a temporary directory and loaded back, so the config.json
path the engine reads is the real one. Prompts of different lengths run in one continuous batch
with chunked prefill (a 12-token step budget, 4-token blocks); Mistral's 8-token sliding window
is crossed by every prompt and by the decode, in both the padded and the deterministic decode.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from parainfer.errors import UsageError
from parainfer.generation import LLMEngine, SamplingParams

MAX_TOKENS = 12
PROMPT_LENGTHS = (5, 11, 19, 30)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.2)


def _config(arch: str, tok):
    """A tiny config of ``arch`` exercising its own options (bias, tied embeddings, q/k norm,
    head_dim other than hidden / heads, rope theta, sliding window, norm epsilon)."""
    import transformers as tf

    ids = dict(vocab_size=len(tok), eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id,
               bos_token_id=tok.bos_token_id)
    if arch == "qwen2":
        return tf.Qwen2Config(**TINY, **ids, tie_word_embeddings=True, rope_theta=1e6, rms_norm_eps=1e-6)
    if arch == "qwen3":
        return tf.Qwen3Config(**TINY, **ids, head_dim=32, tie_word_embeddings=False, rope_theta=5e5)
    if arch == "gemma3_text":
        return tf.Gemma3TextConfig(
            **TINY, **ids, head_dim=32, query_pre_attn_scalar=24, sliding_window=8,
            layer_types=["sliding_attention", "full_attention"], tie_word_embeddings=False,
            rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
                             "full_attention": {"rope_type": "default", "rope_theta": 1e6}},
            attn_logit_softcapping=5.0, final_logit_softcapping=30.0)  # tied: random weights repeat one token
    return tf.MistralConfig(**TINY, **ids, sliding_window=8, rope_theta=1e4, rms_norm_eps=1e-5)


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tokenizer):
    """saved(arch) -> (directory with config.json + weights + tokenizer, the HF model loaded back)."""
    from transformers import AutoModelForCausalLM

    cache: dict[str, tuple[Path, object]] = {}

    def get(arch: str):
        if arch not in cache:
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(_config(arch, tokenizer), dtype=torch.float32)
            if arch == "gemma3_text":  # HF initialises Gemma's norms to 0, which (1 + w) would not test
                with torch.no_grad():
                    for name, param in model.named_parameters():
                        if "norm" in name:
                            param.normal_(0.0, 0.3)
            path = tmp_path_factory.mktemp(arch)
            model.save_pretrained(path)
            tokenizer.save_pretrained(path)
            loaded = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
            assert loaded.config.model_type == arch
            cache[arch] = (path, loaded)
        return cache[arch]

    return get


def _prompts() -> list[list[int]]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randint(100, 40000, (n,), generator=gen).tolist() for n in PROMPT_LENGTHS]


def _hf_greedy(model, ids: list[int]) -> list[int]:
    x = torch.tensor([ids])
    with torch.inference_mode():
        out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=MAX_TOKENS, do_sample=False)
    return out[0, len(ids):].tolist()


@pytest.mark.parametrize("arch,deterministic", [("qwen2", False), ("qwen3", False), ("mistral", False),
                                                ("mistral", True), ("gemma3_text", False), ("gemma3_text", True)])
def test_batched_chunked_greedy_equals_hf(arch, deterministic, saved, tokenizer, record_chunks):
    path, hf_model = saved(arch)
    engine = LLMEngine(path, num_blocks=64, block_size=4, max_num_batched_tokens=12, deterministic=deterministic)
    assert engine.model.model_type == arch
    assert engine.model.sliding_window == (8 if arch in ("mistral", "gemma3_text") else None)
    if arch == "gemma3_text":
        assert engine.model.layer_windows == (8, None)
    chunks = record_chunks(engine)
    prompts = _prompts()
    results = engine.generate(prompts, SamplingParams(max_tokens=MAX_TOKENS))
    assert sum(1 for first, _ in chunks if first > 0) >= 2  # prompts were prefilled in several chunks
    for ids, res in zip(prompts, results):
        expected = _hf_greedy(hf_model, ids)
        assert len(set(expected)) > 1, "degenerate reference: the test would not see a wrong token"
        assert res.token_ids == expected, f"{arch}: prompt of {len(ids)} tokens"
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks


def test_unsupported_model_type_names_it_and_the_supported_ones(tokenizer):
    import transformers as tf

    model = tf.AutoModelForCausalLM.from_config(tf.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100))
    with pytest.raises(UsageError, match=r"'gpt2'.*llama, mistral, qwen2, qwen3, gemma3_text"):
        LLMEngine.from_hf(model, tokenizer, num_blocks=8)


def test_cli_run_generate_on_a_qwen2_directory(saved, tokenizer, tmp_path):
    path, hf_model = saved("qwen2")
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(json.dumps({"id": 0, "text": "Name a fruit."}) + "\n")
    proc = subprocess.run([sys.executable, "-m", "parainfer.cli", "run", str(src), "-o", str(out), "--task",
                           "generate", "--model", str(path), "--workers", "1", "--max-tokens", str(MAX_TOKENS),
                           "-q"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Name a fruit."}], add_generation_prompt=True,
                                        tokenize=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    expected = _hf_greedy(hf_model, ids)
    assert row["prompt_tokens"] == len(ids) and row["completion_tokens"] == len(expected)
    assert row["generated_text"] == tokenizer.decode(expected, skip_special_tokens=True)
