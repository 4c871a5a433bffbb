"""Validation metrics (accuracy, per-class precision/recall/F1 by ``sklearn.metrics``) and the
training-curve plot of epoch-trained backends."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy and per-class precision, recall, F1 and support on the validation set.

    Returns:
        {"accuracy": float, "macro_f1": float, "n_validation": int,
         "per_class": {label: {"precision", "recall", "f1", "support"}}}; precision of a class that
        is never predicted counts as 0 (``zero_division=0``).
    """
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    labels = list(labels)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
            "n_validation": len(y_true),
            "per_class": {lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                                "support": int(s[i])} for i, lab in enumerate(labels)}}


def metrics_lines(metrics: dict[str, Any]) -> list[str]:
    """A printable table: accuracy, then one line per class."""
    lines = [f"validation accuracy {metrics['accuracy']:.4f} on {metrics['n_validation']} texts "
             f"(macro F1 {metrics['macro_f1']:.4f})",
             f"{'class':<20} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}"]
    for label, m in metrics["per_class"].items():
        lines.append(f"{str(label)[:20]:<20} {m['precision']:>9.4f} {m['recall']:>7.4f} {m['f1']:>7.4f} {m['support']:>8}")
    return lines


def plot_curve(history: dict[str, list[float]], path: str | Path, title: str) -> Path:
    """Draw accuracy per epoch (training and validation) to a PNG.

    Args:
        history: {"accuracy": [E floats], "val_accuracy": [E floats]} (Keras' History names).
        path: the .png to write.
        title: the plot title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    epochs = range(1, len(history["accuracy"]) + 1)
    ax.plot(epochs, history["accuracy"], "o-", label="training")
    ax.plot(epochs, history["val_accuracy"], "s-", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
