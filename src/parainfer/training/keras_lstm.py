"""The ``keras`` backend: the classic Keras text classifier, Keras 3 on the PyTorch backend by
default (TensorFlow or JAX when ``KERAS_BACKEND`` says so).

Model: int token ids [B, L] (``models.text_vectorizer``, TextVectorization's defaults) ->
``Embedding(V, embedding_dim, mask_zero=True)`` -> ``LSTM(units)`` -> ``Dense(C, softmax)``,
Adam, sparse categorical cross-entropy; saved as ``model.keras`` plus ``vocabulary.json``.
Small and fast by default: sequences of 48 tokens, 20,000-token vocabulary, 4 epochs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from parainfer.errors import UsageError
from parainfer.models.keras_model import quiet_tensorflow
from parainfer.models.text_vectorizer import TextVectorizer
from parainfer.training.base import Fitted
from parainfer.models.manifest import versions

MODEL_FILE, VOCAB_FILE = "model.keras", "vocabulary.json"


def import_keras() -> Any:
    """Import keras with KERAS_BACKEND (default "torch" here, not Keras' own default "tensorflow")
    and TensorFlow's log lines off (``models.keras_model.quiet_tensorflow``)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    quiet_tensorflow()
    import keras

    return keras


def epoch_lines(keras: Any, epochs: int, say: Callable[[str], None]) -> Any:
    """A keras Callback that says one line per finished epoch: loss, accuracy, validation
    accuracy and seconds."""

    class EpochLines(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            say(f"epoch {epoch + 1}/{epochs}: loss {logs.get('loss', float('nan')):.4f}, accuracy "
                f"{logs.get('accuracy', float('nan')):.4f}, val_accuracy {logs.get('val_accuracy', float('nan')):.4f} "
                f"({time.perf_counter() - self.t:.1f} s)")

    return EpochLines()


def build_model(vocab_size: int, sequence_length: int, classes: int, embedding_dim: int = 64,
                units: int = 32) -> Any:
    """The uncompiled model: [B, L] int ids -> [B, classes] probabilities."""
    keras = import_keras()
    inputs = keras.Input(shape=(sequence_length,), dtype="int32", name="token_ids")
    x = keras.layers.Embedding(vocab_size, embedding_dim, mask_zero=True, name="embedding")(inputs)
    x = keras.layers.LSTM(units, name="lstm")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="softmax")(x)
    return keras.Model(inputs, outputs, name="lstm_text_classifier")


def fit(train_texts: list[str], train_labels: list[str], val_texts: list[str], val_labels: list[str],
        model_dir: Path, seed: int = 0, epochs: int = 4, batch_size: int = 64, sequence_length: int = 48,
        max_tokens: int = 20_000, embedding_dim: int = 64, units: int = 32, learning_rate: float = 2e-3,
        threads: int = 1, progress: Callable[[str], None] | None = None) -> Fitted:
    """Fit the vectorizer and the model, save both, predict the validation texts.

    ``progress`` (when given) gets a line for the vectorizer and one per epoch.

    ``threads``: torch intra-op threads. The LSTM steps through time in Python with tiny ops,
    where one thread was 10x faster than two on the loaded 2-core test machine (thread wake-ups).
    """
    if epochs < 1:
        raise UsageError(f"--epochs {epochs} must be >= 1")
    say = progress or (lambda line: None)
    say(f"importing keras (KERAS_BACKEND={os.environ.get('KERAS_BACKEND', 'torch')})")
    keras = import_keras()
    if keras.backend.backend() == "torch":
        import torch

        torch.set_num_threads(threads)
    keras.utils.set_random_seed(seed)
    labels = sorted(set(train_labels) | set(val_labels))
    index = {lab: i for i, lab in enumerate(labels)}
    vec = TextVectorizer.fit(train_texts, max_tokens, sequence_length)
    x_tr, x_va = vec(train_texts), vec(val_texts)
    y_tr = np.array([index[y] for y in train_labels], dtype=np.int32)
    y_va = np.array([index[y] for y in val_labels], dtype=np.int32)
    say(f"vocabulary of {vec.vocab_size:,} tokens; training {epochs} epochs on {len(train_texts):,} texts "
        f"(keras on {keras.backend.backend()})")
    model = build_model(vec.vocab_size, sequence_length, len(labels), embedding_dim, units)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x_tr, y_tr, validation_data=(x_va, y_va), epochs=epochs, batch_size=batch_size,
                        verbose=0, shuffle=True, callbacks=[epoch_lines(keras, epochs, say)])
    model.save(Path(model_dir) / MODEL_FILE)
    vec.save(Path(model_dir) / VOCAB_FILE)
    probs = np.asarray(model.predict(x_va, batch_size=256, verbose=0))
    return Fitted(labels=labels, val_pred=[labels[i] for i in probs.argmax(axis=1)],
                  files={"model": MODEL_FILE, "vocabulary": VOCAB_FILE},
                  preprocessing={"type": "text-vectorization", "standardize": "lower_and_strip_punctuation",
                                 "split": "whitespace", "sequence_length": sequence_length,
                                 "vocab_size": vec.vocab_size, "pad": 0, "oov": 1},
                  history={k: [float(v) for v in history.history[k]] for k in ("accuracy", "val_accuracy")},
                  extra={"keras_backend": keras.backend.backend(), "epochs": epochs, "batch_size": batch_size,
                         "embedding_dim": embedding_dim, "units": units, "learning_rate": learning_rate})


def package_versions() -> dict[str, str]:
    return versions("keras", "torch", "tensorflow-cpu")
