"""The predictor interface: what a worker calls to run a model on a batch of texts.

A predictor is built in the driver from a picklable :class:`PredictorSpec`, shipped to each
worker process, and loaded there exactly once (``load``); the worker then calls ``predict``
once per task. The driver never tokenises: it sizes and buckets tasks from characters
(``length_estimate``); the worker reports each task's exact counts (``token_counts``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parainfer.counts import TokenCounts


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
        writes_own_rows: outputs are whole output rows (see below).
        max_batch_tokens: the job's token budget (``--max-batch-tokens``), set by the job setup
            before the predictor is shipped: a tokenising predictor keeps each forward pass
            within it exactly (the driver's batches are formed from estimates). None: no budget.

    A predictor that runs its own thread pool declares a ``threads`` attribute: the worker sets
    it to the worker's thread share (``--threads-per-worker``, default cores // workers) before
    ``load``.
    """

    task: str = "custom"
    max_input_tokens: int | None = None
    # Workers for ``--workers 0``: None = the device's default (one per core on the CPU); 1 for a
    # model that spreads one batch over every core itself (threads) and is faster that way.
    default_workers: int | None = None
    #: True: each output dict is the whole output row (the merger adds no id, text or input
    #: columns); an OpenAI batch result line is one.
    writes_own_rows: bool = False
    max_batch_tokens: int | None = None

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

    def max_input_chars(self) -> int | None:
        """Characters of one text worth tokenising: longer texts are cut to it in the driver,
        before anything tokenises them (None: never cut). Truncating models return
        ``window x counts.MAX_CHARS_PER_TOKEN``; the default is None."""
        return None

    def matryoshka_dimensions(self) -> bool | list[int]:
        """Whether the model's embeddings may be truncated (Matryoshka representation learning):
        the sizes it was trained for, True for any size, or False (the default: it was not,
        and an embeddings request's ``dimensions`` gets 400). Cheap; runs in the server."""
        return False

    def token_lengths(self, texts: list[str]) -> list[int]:
        """Length of each text in model tokens (before truncation).

        The default is a characters/4 heuristic (about right for English BPE/WordPiece);
        tokenizer-backed predictors override it with the real tokenizer. Runs in workers (for
        ``token_counts``) and in the server; never in a batch job's driver.
        """
        return [len(t) // 4 + 1 for t in texts]

    def token_counts(self, texts: list[Any]) -> TokenCounts:
        """Exact counts for a task just run on ``texts`` (worker side, after ``predict``).

        The default measures ``token_lengths`` against ``max_input_tokens``; tokenising
        predictors return what their last ``predict`` on the same list measured, so nothing
        is tokenised twice.
        """
        lengths = self.token_lengths(texts)
        cap = self.max_input_tokens
        truncated = [cap is not None and n > cap for n in lengths]
        if cap is not None:
            lengths = [min(n, cap) for n in lengths]
        return TokenCounts.from_lengths(texts, lengths, truncated)

    def describe(self) -> dict[str, Any]:
        """A JSON-able description (name, path, dtype) for reports and fingerprints."""
        return {"class": type(self).__name__, "task": self.task}

    # -- what a worker on another machine needs (``executors.ray_ship``) --------------------
    def local_paths(self) -> list[Path]:
        """The files and directories of this machine that ``load`` reads (weights, tokenizer,
        vocabulary), for an executor whose workers run on other machines to send them there.
        Cheap; runs in the driver. The default: every ``pathlib.Path`` attribute of the
        predictor (the backends keep their paths as ``Path``s)."""
        return [v for v in vars(self).values() if isinstance(v, Path)]

    def relocate(self, moved: dict[Path, Path]) -> None:
        """Point the predictor at copies of its local paths, before ``load`` (worker side):
        every ``Path`` attribute equal to, or under, a key of ``moved`` (a path of
        ``local_paths``) is rewritten to the same place under that key's value."""
        for name, value in list(vars(self).items()):
            if not isinstance(value, Path):
                continue
            for old, new in moved.items():
                if value == old or old in value.parents:
                    setattr(self, name, new / value.relative_to(old))
                    break

    def code_modules(self) -> list[str]:
        """Names of the modules ``load`` imports by name that may be the user's own code rather
        than an installed package's (``--model module:function``'s module); an executor on other
        machines sends those that no installed distribution holds. Default: none."""
        return []
