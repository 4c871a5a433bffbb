"""Keras 3 text classifiers saved as ``.keras`` (``parainfer train --backend keras``), on any
Keras backend: the worker sets ``KERAS_BACKEND`` before it imports keras.

Input: texts -> ``TextVectorizer`` (vocabulary.json) -> int ids [B, L] -> the model ->
probabilities [B, C] (softmax) -> label and score. The backend is the driver's
``KERAS_BACKEND`` when set, else the one the model was trained on, else "torch".
Loaded with ``safe_mode=True`` (no arbitrary code from the file).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from parainfer.errors import UsageError
from parainfer.models.base import Predictor
from parainfer.models.text_vectorizer import TextVectorizer

KERAS_BACKENDS = ("torch", "tensorflow", "jax")


QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0"}
"""Set (unless already set) before keras imports TensorFlow: no C++ info/warning lines, no oneDNN notice."""


def quiet_tensorflow() -> None:
    """Keep TensorFlow's log lines off stderr: ``QUIET_ENV`` (call before importing keras, which
    may import TensorFlow whatever its backend) and absl's Python logging at errors only."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # absl comes with TensorFlow only
        pass


class KerasPredictor(Predictor):
    """``--task classify`` with a Keras model directory.

    Args:
        model_dir: the directory (model.keras, vocabulary.json, parainfer-model.json).
        manifest: its parsed manifest (labels, files, training.keras_backend).
        keras_backend: "torch" | "tensorflow" | "jax"; default as described above.

    Raises:
        UsageError: an unknown backend name.
    """

    task = "classify"

    def __init__(self, model_dir: str | os.PathLike, manifest: dict[str, Any], keras_backend: str | None = None):
        self.model_dir = Path(model_dir)
        files = manifest.get("files", {})
        self.model_path = self.model_dir / files.get("model", "model.keras")
        self.vocab_path = self.model_dir / files.get("vocabulary", "vocabulary.json")
        self.labels = list(manifest["labels"])
        self.keras_backend = (keras_backend or os.environ.get("KERAS_BACKEND")
                              or manifest.get("training", {}).get("keras_backend") or "torch")
        if self.keras_backend not in KERAS_BACKENDS:
            raise UsageError(f"KERAS_BACKEND {self.keras_backend!r} is not supported; "
                             f"accepted: {', '.join(KERAS_BACKENDS)}")
        self.vectorizer = TextVectorizer.load(self.vocab_path)
        self.max_input_tokens = self.vectorizer.sequence_length
        self._model: Any = None

    def load(self) -> None:
        """Import keras on ``keras_backend`` and load the model (safe mode).

        Raises:
            RuntimeError: keras is already imported in this process on another backend.
        """
        if "keras" not in sys.modules:
            os.environ["KERAS_BACKEND"] = self.keras_backend
        quiet_tensorflow()
        import keras

        if keras.backend.backend() != self.keras_backend:
            raise RuntimeError(f"keras is already loaded on backend {keras.backend.backend()!r} in this process; "
                               f"cannot run this model on {self.keras_backend!r}")
        threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
        if threads and self.keras_backend == "tensorflow":
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(threads)
        # compile=False: inference needs no optimizer, and a torch-trained file's optimizer config
        # names torch classes (importing torch next to TensorFlow aborts in LLVM).
        self._model = keras.saving.load_model(self.model_path, compile=False, safe_mode=True)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Class probabilities [B, C] float32 (one forward call, training=False)."""
        import keras

        return np.asarray(keras.ops.convert_to_numpy(self._model(self.vectorizer(texts), training=False)))

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        """Classify B texts; returns B dicts {"label": str, "score": float}."""
        probs = self.predict_proba(texts)
        best = probs.argmax(axis=1)
        return [{"label": self.labels[i], "score": float(probs[r, i])} for r, i in enumerate(best)]

    def token_lengths(self, texts: list[str]) -> list[int]:
        """Whitespace tokens after standardisation (before truncation to the sequence length)."""
        return self.vectorizer.token_counts(texts)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_model": None}

    def describe(self) -> dict[str, Any]:
        return {"class": type(self).__name__, "task": self.task, "model": str(self.model_path),
                "backend": "keras", "keras_backend": self.keras_backend, "labels": self.labels}
