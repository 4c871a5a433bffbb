"""``parainfer train``: one trainer per backend, the model-directory manifest.

``train(input, output_dir, backend=..., label_column=..., ...) -> metrics dict`` is the entry point
(the CLI is a thin wrapper); see ``parainfer.training.train.train``.
"""

from __future__ import annotations

from typing import Any


def train(input: str, output_dir: str, backend: str = "sklearn", **options: Any) -> dict[str, Any]:
    """Train and save a classifier; see :func:`parainfer.training.train.train` for the arguments."""
    from parainfer.training.train import train as _train

    return _train(input, output_dir, backend=backend, **options)


__all__ = ["train"]
