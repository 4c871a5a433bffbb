"""What a training backend returns to ``training.train`` (the common part writes the manifest,
metrics and plot)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Fitted:
    """One backend's trained model, already saved in the model directory.

    Attributes:
        labels: class index -> label, as the model's outputs are ordered; each label of the
            type it had in the training data (``data.Label``).
        val_pred: the model's predicted label for each validation text, in order (same types).
        files: {role: path relative to the model directory} of what was saved.
        preprocessing: how the predictor turns text into model input (goes in the manifest).
        history: per-epoch {"accuracy": [...], "val_accuracy": [...]} for epoch-trained backends.
        extra: anything else for the manifest's "training" entry (hyper-parameters, sizes).
    """

    labels: list[Any]
    val_pred: list[Any]
    files: dict[str, str]
    preprocessing: dict[str, Any]
    history: dict[str, list[float]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
