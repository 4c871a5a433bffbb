"""Sampling parameters of one request, and the sampler that turns logits into next tokens.

Greedy decoding (``temperature == 0``) is a batched argmax. Sampled rows each draw from their
own ``torch.Generator`` seeded from ``SamplingParams.seed``, so a request's tokens depend only
on its prompt, its parameters and its seed, never on which other requests shared its batch
(up to float rounding in batched matmuls). Filtering follows the usual order: temperature,
then top-k, then top-p (nucleus, Holtzman et al. 2019, https://arxiv.org/abs/1904.09751).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from parainfer.errors import UsageError

if TYPE_CHECKING:
    from parainfer.generation.sequence import Sequence


@dataclass
class SamplingParams:
    """How one request is decoded.

    Attributes:
        max_tokens: most tokens to generate (>= 1); the request ends with
            ``finish_reason="length"`` when it gets there.
        temperature: 0 for greedy (argmax); > 0 divides the logits before softmax.
        top_p: keep the smallest set of tokens whose probability sums to >= top_p (0 < p <= 1).
        top_k: keep the k most likely tokens; 0 or -1 keeps all.
        seed: seeds this request's generator; None draws a random seed.
        stop: strings that end the request when they appear in the output text; the text
            returned stops before the match (OpenAI semantics), ``finish_reason="stop"``.
        ignore_eos: keep generating past the end-of-sequence token (benchmarks).
    """

    max_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = [s for s in (self.stop or []) if s]
        if self.max_tokens < 1:
            raise UsageError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise UsageError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UsageError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < -1:
            raise UsageError(f"top_k must be -1, 0 (all) or a positive count, got {self.top_k}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def make_generator(self) -> torch.Generator | None:
        """A CPU generator seeded with ``seed`` (random when None); None for greedy requests."""
        if self.greedy:
            return None
        gen = torch.Generator(device="cpu")
        gen.manual_seed(self.seed if self.seed is not None else random.SystemRandom().getrandbits(63))
        return gen


def sample(logits: torch.Tensor, seqs: list[Sequence]) -> list[int]:
    """Pick the next token of each sequence.

    Args:
        logits: [B, vocab] float logits, row i for ``seqs[i]``.
        seqs: the B sequences (their ``params`` and ``generator`` are used).

    Returns:
        B token ids.
    """
    logits = logits.float()
    out = logits.argmax(dim=-1).tolist()
    for i, seq in enumerate(seqs):
        if not seq.params.greedy:
            out[i] = _sample_row(logits[i], seq.params, seq.generator)
    return out


def _sample_row(row: torch.Tensor, params: SamplingParams, gen: torch.Generator | None) -> int:
    """Temperature, top-k, top-p, then one multinomial draw. ``row`` is [vocab] fp32."""
    row = row / params.temperature
    if params.top_k > 0 and params.top_k < row.numel():
        kth = torch.topk(row, params.top_k).values[-1]
        row = row.masked_fill(row < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(row, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= params.top_p  # keep the token that crosses p
        row = row.clone()
        row[order[drop]] = float("-inf")
    probs = row.softmax(-1)
    return int(torch.multinomial(probs, 1, generator=gen).item())
