"""The predictor interface: what a worker calls to run a model on a batch of texts.

A predictor is built in the driver from a picklable :class:`PredictorSpec`, shipped to each
worker process, and loaded there exactly once (``load``); the worker then calls ``predict``
once per task. ``token_lengths`` is cheap and runs in the driver to size and bucket tasks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class RecordFailure:
    """Returned by ``predict`` in place of one record's output when only that record is bad
    (for example a prompt longer than the context window): the record is quarantined with
    ``reason`` and the rest of the batch keeps its results."""

    reason: str


class Predictor(ABC):
    """A model replica held by one worker.

    Subclasses must be picklable before ``load`` is called (keep heavy state out of
    ``__init__``), so the driver can send them to worker processes.

    Attributes:
        task: "classify", "embed", "generate" or "translate"; decides the output columns.
        max_input_tokens: the model's window in tokens; longer texts are truncated (and
            counted). None when the model has no window (a Python callable).
        default_workers: workers when the user asks for the default (``--workers 0``); None
            leaves it to the device (one per core on the CPU, one per GPU).

    A predictor that runs its own thread pool declares a ``threads`` attribute: the worker sets
    it to the worker's thread share (``--threads-per-worker``, default cores // workers) before
    ``load``.
        writes_own_rows: outputs are whole output rows (see below).
    """

    task: str = "custom"
    max_input_tokens: int | None = None
    # Workers for ``--workers 0``: None = the device's default (one per core on the CPU); 1 for a
    # model that spreads one batch over every core itself (threads) and is faster that way.
    default_workers: int | None = None
    #: True: each output dict is the whole output row (the merger adds no id, text or input
    #: columns); an OpenAI batch result line is one.
    writes_own_rows: bool = False

    @abstractmethod
    def load(self) -> None:
        """Load weights and tokenizer into this process. Called once per worker."""

    @abstractmethod
    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        """Run the model on a batch.

        Args:
            texts: B strings.

        Returns:
            B dicts of JSON-able outputs, in the order of ``texts`` (for example
            ``{"label": "positive", "score": 0.97}`` or ``{"embedding": [384 floats]}``),
            or a :class:`RecordFailure` in place of a record that cannot be processed.

        Raises:
            Any exception when the batch fails; the worker then retries record by record so
            only the failing records are quarantined.
        """

    def window(self) -> int | None:
        """The model's input window in tokens (None: no limit). Cheap; runs in the driver."""
        return self.max_input_tokens

    def token_lengths(self, texts: list[str]) -> list[int]:
        """Estimated length of each text in model tokens (before truncation).

        The default is a characters/4 heuristic (about right for English BPE/WordPiece);
        tokenizer-backed predictors override it with the real tokenizer. Used by the driver to
        bucket by length, form token-budget batches, and estimate task cost.
        """
        return [len(t) // 4 + 1 for t in texts]

    def describe(self) -> dict[str, Any]:
        """A JSON-able description (name, path, dtype) for reports and fingerprints."""
        return {"class": type(self).__name__, "task": self.task}
