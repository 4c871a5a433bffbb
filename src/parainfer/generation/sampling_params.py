"""Sampling parameters of one request: temperature, top-k, top-p, seed, stop, logprobs, grammar.

The sampler that applies them is ``generation.sampler``: greedy (``temperature == 0``) is a
batched argmax; sampled rows each draw from their own ``torch.Generator`` seeded from
``seed``, so a request's tokens never depend on its batch; filters apply temperature, then
top-k, then top-p (nucleus, Holtzman et al. 2019, https://arxiv.org/abs/1904.09751). Every
value the API accepts gives a valid token: ``MIN_TEMPERATURE`` and ``SEED_MIN..SEED_MAX`` bound
the inputs. The numerical-safety rules: docs/generation.md, "Sampling".
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
import torch

from parainfer.errors import UsageError

MIN_TEMPERATURE = 1e-5  # below this, sampling is greedy (vLLM's _SAMPLING_EPS)
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1  # what torch.Generator.manual_seed accepts
MAX_TOP_LOGPROBS = 20  # OpenAI's limit for top_logprobs


@dataclass
class SamplingParams:
    """How one request is decoded.

    Attributes:
        max_tokens: most tokens to generate (>= 1); the request ends with
            ``finish_reason="length"`` when it gets there.
        temperature: 0 for greedy (argmax); > 0 divides the logits before softmax; below
            ``MIN_TEMPERATURE`` it is greedy too.
        top_p: keep the smallest set of tokens whose probability sums to >= top_p (0 < p <= 1).
        top_k: keep the k most likely tokens; 0 or -1 keeps all.
        seed: seeds this request's generator, in ``[SEED_MIN, SEED_MAX]`` (a negative seed
            is taken modulo 2**64, as torch does); None draws a random seed.
        stop: strings that end the request when they appear in the output text; the text
            returned stops before the match (OpenAI semantics), ``finish_reason="stop"``.
        ignore_eos: keep generating past the end-of-sequence token (benchmarks).
        response_format: OpenAI's ``{"type": "json_object"}`` or ``{"type": "json_schema",
            "json_schema": {"schema": {...}}}``: the output is constrained to JSON (to the
            schema) by token masks (:mod:`parainfer.generation.grammar`); None or
            ``{"type": "text"}``: free text.
        logprobs: None for none; k in 0..MAX_TOP_LOGPROBS to return, per generated token, its
            log-probability and the k most likely tokens' (log-softmax of the model's raw
            logits, before temperature, top-k/top-p and grammar masks, as vLLM's default).
    """

    max_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    response_format: dict | None = None
    logprobs: int | None = None

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
        if self.seed is not None and not SEED_MIN <= self.seed <= SEED_MAX:
            raise UsageError(f"seed must be in [-2**63, 2**64 - 1] (64 bits), got {self.seed}")
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_TOP_LOGPROBS:
            raise UsageError(f"top logprobs must be in 0..{MAX_TOP_LOGPROBS}, got {self.logprobs}")
        if self.response_format is not None:
            from parainfer.generation.grammar import response_format_kind

            response_format_kind(self.response_format)  # a malformed one is a UsageError here (the schema
            # itself is checked when the engine compiles it)

    @property
    def greedy(self) -> bool:
        """True for temperature 0 and for temperatures too small to divide by (< MIN_TEMPERATURE)."""
        return self.temperature < MIN_TEMPERATURE

    def make_generator(self) -> torch.Generator | None:
        """A CPU generator seeded with ``seed`` (random when None); None for greedy requests."""
        if self.greedy:
            return None
        gen = torch.Generator(device="cpu")
        gen.manual_seed(self.seed % 2**64 if self.seed is not None else random.SystemRandom().getrandbits(63))
        return gen
