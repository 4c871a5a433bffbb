"""Token counts of a batch, and the padding arithmetic on them (a leaf: imports nothing of parainfer).

Workers measure ``TokenCounts`` when they tokenise; the driver, the report and the length
estimate add them up. ``split_by_padding`` and ``within_budget`` cut a length-sorted batch into
forward passes by padded cost (used by the task builder and by encoder predictors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

@dataclass(slots=True)
class TokenCounts:
    """Exact token counts of one task, measured by the worker that tokenised it.

    Attributes:
        real: tokens after truncation, summed over the task's records.
        padded: padded tokens the worker computed: B x the longest truncated record for one
            padded batch, or rows x longest summed over the forward passes of a predictor that
            cuts a task into length groups (``hf_common``).
        truncated: records longer than the model window (cut to it).
        fit_records, fit_chars, fit_tokens: over the records that were *not* truncated, their
            number, characters and tokens: what the driver's length estimate learns from.
        prefill_computed, prefix_cache_queries, prefix_cache_hits: generation only: prompt
            tokens the engine computed at prefill, looked up in its prefix cache, and found there
            (their prefill skipped).
    """

    real: int = 0
    padded: int = 0
    truncated: int = 0
    fit_records: int = 0
    fit_chars: int = 0
    fit_tokens: int = 0
    prefill_computed: int = 0
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0

    @classmethod
    def from_lengths(cls, texts: Sequence[Any], lengths: Sequence[int], truncated: Sequence[bool]) -> "TokenCounts":
        """Counts from per-record truncated lengths (tokens) and truncation flags, aligned with texts."""
        fit = [i for i, cut in enumerate(truncated) if not cut]
        return cls(real=sum(lengths), padded=max(lengths, default=0) * len(lengths), truncated=len(texts) - len(fit),
                   fit_records=len(fit), fit_chars=sum(text_chars(texts[i]) for i in fit),
                   fit_tokens=sum(lengths[i] for i in fit))


    def add(self, other: "TokenCounts") -> None:
        """Add every count of ``other`` to these (a running total over tasks)."""
        for name in ("real", "padded", "truncated", "fit_records", "fit_chars", "fit_tokens",
                     "prefill_computed", "prefix_cache_queries", "prefix_cache_hits"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def split_by_padding(lengths: Sequence[int], overhead_tokens: float) -> list[range]:
    """Cut a batch, sorted by length, into runs that cost least to run as separate forward passes.

    A padded forward pass over a run of n texts whose longest has L tokens costs about
    ``overhead_tokens + n * L`` (token-equivalents: a fixed per-call cost plus the padded
    tokens). A batch that mixes 5- and 60-token texts wastes most of its short rows, but every
    extra call pays the overhead again; this picks the cut points that minimise the sum.

    Algorithm: the classic optimal partition of a sorted sequence into contiguous segments by
    dynamic programming, ``best[j] = min_i best[i] + overhead + (j - i) * lengths[j-1]``,
    O(n^2) with a numpy inner loop (n <= a few hundred). Returns at once (one run) when the
    batch's total padding is under one overhead, since no cut can then pay for itself.

    Args:
        lengths: token lengths in ascending order (n >= 0).
        overhead_tokens: the per-call cost in token-equivalents (>= 0); ``inf`` never cuts.

    Returns:
        Consecutive ranges covering ``range(n)`` in order (empty list for n = 0).

    Raises:
        ValueError: ``lengths`` is not ascending.
    """
    import numpy as np

    n = len(lengths)
    if n == 0:
        return []
    lens = np.asarray(lengths, dtype=np.float64)
    if n > 1 and bool((np.diff(lens) < 0).any()):
        raise ValueError("split_by_padding needs lengths in ascending order")
    if not overhead_tokens < n * lens[-1] - lens.sum():
        return [range(n)]
    best = np.zeros(n + 1)
    cut = np.zeros(n + 1, dtype=np.int64)
    starts = np.arange(n + 1, dtype=np.float64)
    for j in range(1, n + 1):
        costs = best[:j] + overhead_tokens + (j - starts[:j]) * lens[j - 1]
        i = int(np.argmin(costs))
        best[j], cut[j] = costs[i], i
    runs, j = [], n
    while j > 0:
        runs.append(range(int(cut[j]), j))
        j = int(cut[j])
    return runs[::-1]


def within_budget(runs: list[range], sorted_lengths: list[int], max_tokens: int | None) -> list[range]:
    """Cut each run of a length-sorted batch further so that no forward pass holds more than
    ``max_tokens`` padded tokens (rows x longest); a single row over budget runs alone.

    This is where ``--max-batch-tokens`` holds exactly: the driver formed the task from length
    estimates. Returns the runs unchanged when ``max_tokens`` is None."""
    if max_tokens is None:
        return runs
    out: list[range] = []
    for run in runs:
        start = run.start
        for j in range(run.start, run.stop):
            if j > start and (j - start + 1) * sorted_lengths[j] > max_tokens:
                out.append(range(start, j))
                start = j
        out.append(range(start, run.stop))
    return out


def text_chars(text: Any) -> int:
    """Characters of a record's text, what the driver sizes tasks by: a string's length; for a
    chat conversation (a list of {"role", "content"} dicts) or a list of texts, the sum over its
    items; for an OpenAI batch request line ({"custom_id", "url", "body"}), what its body gives
    the model (``input``, ``prompt``, ``messages``). A token id counts as 4 characters (one
    token at the prior ratio of the length estimate)."""
    if isinstance(text, str):
        return len(text)
    if isinstance(text, list):
        return sum(text_chars(item) for item in text)
    if isinstance(text, dict):
        body = text.get("body")
        if isinstance(body, dict):  # a batch request line
            return sum(text_chars(body.get(key)) for key in ("input", "prompt", "messages"))
        return text_chars(text.get("content")) + text_chars(text.get("text"))  # a chat message or a content part
    if isinstance(text, int) and not isinstance(text, bool):
        return 4
    return 0


# Most characters one token can stand for, used to cut a text before tokenising it. 128 covers
# WordPiece's longest word (100 characters, beyond which a word becomes one [UNK]) plus its
# separator, and byte-level BPE merges (rarely past 16 characters). A text can only lose
# tokens to the cut when it holds longer runs of characters the tokenizer drops (whitespace,
# control characters): then fewer than ``window`` tokens stand in its first
# ``window x 128`` characters.
MAX_CHARS_PER_TOKEN = 128
