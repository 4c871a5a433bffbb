"""The driver's token-length estimate: characters x a tokens-per-character ratio learned online.

``LengthEstimator`` gives ``1 + ceil(chars x r)`` tokens per text with the fixed prior
``r = PRIOR_TOKENS_PER_CHAR`` (1/4), so that the same input always gives the same batches, and
learns the true ratio from the workers' exact counts (``TaskResult.counts``, over the records
they did not truncate) for the report. A text counts only up to ``max_chars`` characters
(``window x counts.MAX_CHARS_PER_TOKEN``). Why the driver never tokenises, and the figures:
docs/timing.md, "Estimated and exact token figures".
"""

from __future__ import annotations

import math
from typing import Any

from parainfer.counts import TokenCounts, text_chars

PRIOR_TOKENS_PER_CHAR = 0.25


class LengthEstimator:
    """Estimates tokens per text from its characters; learns the ratio from exact counts.

    Args:
        prior_tokens_per_char: the ratio before any count came back (> 0).
        max_chars: characters beyond this are not counted (the text is cut there); None: no cut.

    Calling it with B texts returns B estimated token counts (ints >= 1).
    """

    def __init__(self, prior_tokens_per_char: float = PRIOR_TOKENS_PER_CHAR, max_chars: int | None = None):
        if not prior_tokens_per_char > 0:
            raise ValueError(f"prior_tokens_per_char must be > 0, got {prior_tokens_per_char}")
        self.prior = prior_tokens_per_char
        self.max_chars = max_chars
        self.chars = 0
        self.tokens = 0
        self.records = 0

    @property
    def tokens_per_char(self) -> float:
        """The current ratio: learned once any characters were counted, else the prior."""
        return self.tokens / self.chars if self.chars else self.prior

    def __call__(self, texts: list[Any]) -> list[int]:
        """Estimates from the *prior* ratio, never the learned one: the learned ratio depends on
        when results came back, and batches must not (same input, same batches, same output
        bits). The learned ratio is reported, and the workers hold the token budget exactly."""
        prior, cap = self.prior, self.max_chars
        # Pure Python on purpose: importing numpy here cost the driver ~0.7 s before its first task.
        sizes = map(len, texts) if set(map(type, texts)) <= {str} else map(text_chars, texts)
        if cap is None:
            return [1 + math.ceil(n * prior) for n in sizes]
        return [1 + math.ceil((n if n < cap else cap) * prior) for n in sizes]

    def observe(self, counts: TokenCounts) -> None:
        """Learn from one task's exact counts (its records that were not truncated)."""
        self.chars += counts.fit_chars
        self.tokens += counts.fit_tokens
        self.records += counts.fit_records

    def describe(self) -> dict[str, Any]:
        """For the report: the ratio and how many records it was learned from."""
        return {"tokens_per_char": round(self.tokens_per_char, 5), "learned_from_records": self.records,
                "prior_tokens_per_char": self.prior, "max_chars_per_record": self.max_chars}
