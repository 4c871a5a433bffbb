"""``parainfer train``: read a labelled file, split it, fit one backend, save MODEL_DIR.

The common steps live here; each backend (``sklearn_tfidf``, ``head``, ``keras_lstm``) only fits
and saves its model and predicts the validation texts.
"""

from __future__ import annotations

import importlib
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from parainfer.errors import UsageError
from parainfer.training.data import read_labelled, split, write_errors
from parainfer.models.manifest import MANIFEST, write_manifest
from parainfer.training.metrics import classification_metrics, plot_curve

TRAINERS = {"sklearn": "parainfer.training.sklearn_tfidf", "head": "parainfer.training.head",
            "keras": "parainfer.training.keras_lstm"}


def train(input: str, output_dir: str, backend: str = "sklearn", label_column: str = "label",
          text_column: str = "text", id_column: str = "id", validation: float = 0.2, seed: int = 0,
          errors: str | None = None, overwrite: bool = False, command: str | None = None,
          progress: Callable[[str], None] | None = None, **options: Any) -> dict[str, Any]:
    """Train a text classifier on a labelled file and save it as a parainfer model directory.

    Args:
        input: a .jsonl, .csv or .parquet file with a text column and a label column (2 classes
            or more, 2 rows or more of each; labels of one type, which they keep: a JSONL ``1``
            is predicted as the integer 1, ``"1"`` as the string).
        output_dir: the model directory to create (``run --model DIR`` reads it).
        backend: "sklearn" (TF-IDF word + char n-grams, logistic regression; skops),
            "head" (built-in sentence encoder + logistic-regression head; safetensors) or
            "keras" (Embedding -> LSTM -> Dense softmax; .keras, KERAS_BACKEND or torch).
        label_column, text_column, id_column: column names.
        validation: fraction of rows held out (stratified, ``random_state=seed``).
        seed: split seed; also seeds the backend's own randomness.
        errors: where bad rows go (default MODEL_DIR/train.errors.jsonl; written only if any).
        overwrite: replace an existing model directory's manifest.
        command: the command line to record in the manifest (default: this process's argv).
        progress: called with one line per step (reading, each backend stage, keras epochs,
            head embedding chunks); None: silent (the CLI prints them on stderr).
        options: backend options (sklearn: ``C``, ``max_features``, ``solver``, ``class_weight``,
            ``n_jobs``; head: ``C``, ``class_weight``, ``workers``, ``dtype``; keras: ``epochs``,
            ``batch_size``, ``sequence_length``, ``max_tokens``, ``embedding_dim``, ``units``).

    Returns:
        The metrics dict: accuracy, macro_f1, n_validation, per_class {str(label): precision,
        recall, f1, support}, plus n_train, bad_rows, seconds, model_dir, backend, curve (PNG
        path or None).

    Raises:
        UsageError: unknown backend, bad input file or columns, a directory that already holds
            a model (without ``overwrite``), labels of mixed types, fewer than 2 classes or a class
            with one row (``data.split``), texts a backend cannot use, bad options.
    """
    if backend not in TRAINERS:
        raise UsageError(f"unknown backend {backend!r}; accepted: {', '.join(TRAINERS)}")
    out = Path(output_dir)
    if (out / MANIFEST).exists() and not overwrite:
        raise UsageError(f"{str(out)!r} already holds a model; choose another --output or pass --overwrite")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output {str(out)!r} is a file; expected a directory to create")
    say = progress or (lambda line: None)
    t0 = time.perf_counter()
    data = read_labelled(input, text_column, label_column, id_column)
    tr, va = split(data.labels, validation, seed)
    say(f"{len(data.texts):,} rows ({len(data.errors):,} bad), {len(set(data.labels)):,} classes: "
        f"{len(tr):,} to train on, {len(va):,} to validate")
    out.mkdir(parents=True, exist_ok=True)
    errors_path = errors or str(out / "train.errors.jsonl")
    bad = write_errors(data.errors, errors_path)
    texts, labels = data.texts, data.labels
    trainer = importlib.import_module(TRAINERS[backend])
    fitted = trainer.fit([texts[i] for i in tr], [labels[i] for i in tr], [texts[i] for i in va],
                         [labels[i] for i in va], out, seed=seed, progress=progress, **options)
    # metrics by the labels' text (JSON keys are strings; one type per column keeps it one-to-one)
    metrics = classification_metrics([str(labels[i]) for i in va], [str(p) for p in fitted.val_pred],
                                     [str(c) for c in fitted.labels])
    curve = None
    if fitted.history:
        curve = str(plot_curve(fitted.history, out / "training_curve.png", f"{backend}: accuracy per epoch"))
        metrics["history"] = fitted.history
    seconds = time.perf_counter() - t0
    write_manifest(out, {
        "backend": backend, "task": "classify", "labels": fitted.labels, "files": fitted.files,
        "preprocessing": fitted.preprocessing, "metrics": metrics,
        "training": {"input": str(input), "text_column": text_column, "label_column": label_column,
                     "validation": validation, "seed": seed, "n_train": len(tr), "n_validation": len(va),
                     "bad_rows": bad, "seconds": round(seconds, 2), **fitted.extra},
        "command": command or " ".join(shlex.quote(a) for a in ["parainfer", *sys.argv[1:]]),
        "versions": trainer.package_versions()})
    return {**metrics, "n_train": len(tr), "bad_rows": bad, "errors_file": errors_path if bad else None,
            "seconds": seconds, "model_dir": str(out), "backend": backend, "curve": curve}
