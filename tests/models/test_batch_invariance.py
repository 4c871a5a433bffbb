"""Deterministic mode of the Hugging Face encoders: how texts are cut into forward passes.

A text is computed at ``canonical_width`` of its own length, rows of different widths never
share a forward pass, and (mode per-text) each text runs alone. The bits themselves, served
against a batch job's, are checked end to end in tests/serving/test_deterministic_serving.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from parainfer.models.hf_common import FIXED_ROWS, canonical_width
from parainfer.platform import datasets


def test_canonical_width_rounds_up_to_the_step_of_its_length_and_stops_at_the_window():
    lengths = (1, 15, 17, 64, 65, 128, 129, 250, 256, 300)
    assert [canonical_width(n, 256) for n in lengths] == [8, 16, 24, 64, 80, 128, 160, 256, 256, 256]
    assert canonical_width(0, None) == 8  # an empty encoding still has a width
    assert canonical_width(9, 10, step=8) == 10  # a window that is not a multiple of the step caps it


@pytest.fixture(scope="module")
def embedder():
    """The built-in embedder with its tokenizer loaded (no weights: grouping needs lengths only)."""
    from parainfer.models.hf_embed import HFEmbedPredictor, default_embed_model_dir

    predictor = HFEmbedPredictor(default_embed_model_dir(), dtype="float32")
    predictor.max_batch_tokens = 8192
    predictor._get_tokenizer()
    return predictor


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """60 real texts of mixed length: VADER tweets and reviews, BBC paragraphs."""
    import json

    vader = [json.loads(line)["text"] for line in datasets.fetch("vader").open()][:40]
    bbc = [json.loads(line)["text"] for line in datasets.fetch("bbc").open()][:20]
    return vader + [t[: 200 + 40 * i] for i, t in enumerate(bbc)]


@pytest.mark.parametrize("mode", ["canonical-width", "fixed-rows", "per-text"])
def test_passes_never_mix_widths_and_stay_in_budget(embedder, texts, mode):
    embedder.numerics_mode = mode
    try:
        lengths = sorted(min(n, embedder.max_input_tokens) for n in embedder.token_lengths(texts))
        runs, widths = embedder._runs(lengths)
        assert [k for run in runs for k in run] == list(range(len(lengths)))
        for run in runs:
            assert len({widths[k] for k in run}) == 1  # one width per forward pass
            assert max(len(run), FIXED_ROWS if mode == "fixed-rows" else 1) * widths[run.start] <= embedder.max_batch_tokens
            assert {"canonical-width": len(run) >= 1, "fixed-rows": len(run) <= FIXED_ROWS, "per-text": len(run) == 1}[mode]
        assert widths == [canonical_width(n, embedder.max_input_tokens) for n in lengths]
        assert len(runs) < len(lengths) or mode == "per-text"  # equal widths do share a pass
        if mode == "fixed-rows":  # every pass is computed at exactly FIXED_ROWS rows; results map back 1:1
            groups = list(embedder._length_groups(texts))
            assert sorted(r for rows, _ in groups for r in rows) == list(range(len(texts)))
            assert all(batch["input_ids"].shape[0] == FIXED_ROWS for _, batch in groups)
            assert any(len(rows) < FIXED_ROWS for rows, _ in groups)  # some were filled
    finally:
        embedder.numerics_mode = None


def test_a_classifier_heads_score_of_a_row_does_not_depend_on_the_other_rows():
    from parainfer.models.hf_classify import DEFAULT_HEAD, apply_head, load_head

    weight, bias, labels, _ = load_head(DEFAULT_HEAD)
    vectors = np.random.default_rng(0).standard_normal((33, weight.shape[1])).astype(np.float32)
    together = apply_head(vectors, weight, bias, labels)
    assert together == [apply_head(vectors[i:i + 1], weight, bias, labels)[0] for i in range(len(vectors))]


def test_no_deterministic_means_free_groups_and_says_so(embedder, texts):
    embedder.deterministic = False
    try:
        info = embedder.probe_batch_invariance(embedder._encode_with)  # returns before any forward
        assert info["deterministic"] is False and info["mode"] == "free" and "--no-deterministic" in info["reason"]
        lengths = sorted(min(n, embedder.max_input_tokens) for n in embedder.token_lengths(texts))
        runs, widths = embedder._runs(lengths)
        assert all(widths[k] == lengths[run.stop - 1] for run in runs for k in run)  # padded to the longest
    finally:
        embedder.deterministic = True
