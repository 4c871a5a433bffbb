"""Deterministic mode of the Hugging Face encoders: canonical widths and the load-time probe.

A text is computed at ``canonical_width`` of its own length, rows of different widths never
share a forward pass, and the probe decides whether rows of one width may share one (mode
canonical-width) or each text runs alone (per-text). Either way a text's embedding has the same
bits whatever it is batched with: checked here on real texts, mixed lengths, in real batches.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from parainfer.models.hf_common import CANONICAL_WIDTH_STEP, canonical_width
from parainfer.platform import datasets


def test_canonical_width_rounds_up_to_the_step_and_stops_at_the_window():
    assert [canonical_width(n, 256) for n in (1, 15, 16, 17, 250, 256, 300)] == [16, 16, 16, 32, 256, 256, 256]
    assert canonical_width(0, None) == CANONICAL_WIDTH_STEP  # an empty encoding still has a width
    assert canonical_width(9, 10, step=8) == 10  # a window that is not a multiple of the step caps it


@pytest.fixture(scope="module")
def embedder():
    import torch

    from parainfer.models.hf_embed import HFEmbedPredictor, default_embed_model_dir

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    predictor = HFEmbedPredictor(default_embed_model_dir(), dtype="float32")
    predictor.max_batch_tokens = 8192
    predictor.load()
    yield predictor
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """60 real texts of mixed length: VADER tweets and reviews, BBC paragraphs."""
    import json

    vader = [json.loads(line)["text"] for line in datasets.fetch("vader").open()][:40]
    bbc = [json.loads(line)["text"] for line in datasets.fetch("bbc").open()][:20]
    return vader + [t[: 200 + 40 * i] for i, t in enumerate(bbc)]


def test_probe_decides_a_deterministic_mode_and_says_why(embedder):
    info = embedder.describe()["batch_invariance"]
    assert info["deterministic"] is True and info["mode"] in ("canonical-width", "per-text")
    assert info["mode"] == embedder.numerics_mode and info["reason"]
    assert "invariance_probe_s" in embedder.load_phases


def test_passes_never_mix_widths_and_stay_in_budget(embedder, texts):
    lengths = sorted(embedder.token_lengths(texts))
    lengths = [min(n, embedder.max_input_tokens) for n in lengths]
    runs, widths = embedder._runs(lengths)
    assert [k for run in runs for k in run] == list(range(len(lengths)))
    for run in runs:
        assert len({widths[k] for k in run}) == 1  # one width per forward pass
        assert len(run) * widths[run.start] <= embedder.max_batch_tokens
    assert widths == [canonical_width(n, embedder.max_input_tokens) for n in lengths]


def test_a_text_gets_the_same_bits_whatever_it_is_batched_with(embedder, texts):
    alone = {t: embedder.encode([t])[0] for t in texts[::3]}
    rng = random.Random(7)
    for _ in range(4):
        batch = rng.sample(texts, rng.randint(2, len(texts)))
        got = embedder.encode(batch)
        for text, row in zip(batch, got):
            if text in alone:
                assert row.dtype == np.float32 and row.tobytes() == alone[text].tobytes(), text[:60]


def test_no_deterministic_means_free_groups_and_says_so(embedder, texts):
    mode = embedder.numerics_mode
    embedder.deterministic = False
    try:
        info = embedder.probe_batch_invariance(embedder._encode_with)
        assert info["deterministic"] is False and info["mode"] == "free" and "--no-deterministic" in info["reason"]
        lengths = sorted(min(n, embedder.max_input_tokens) for n in embedder.token_lengths(texts))
        runs, widths = embedder._runs(lengths)
        assert all(widths[k] == lengths[run.stop - 1] for run in runs for k in run)  # padded to the longest
    finally:
        embedder.deterministic, embedder.numerics_mode = True, mode
