"""A Sequence: one request's tokens and state as it moves through the engine.

Lifecycle: WAITING (queued; also after a preemption) -> RUNNING (holds KV-cache blocks, in the
batch) -> FINISHED. While RUNNING the KV cache holds the first ``num_computed_tokens`` tokens:
fewer than ``num_tokens - 1`` while its prefill is done in chunks, then exactly
``num_tokens - 1`` after each step (the last token is the input of the next decode step).
"""

from __future__ import annotations

from enum import Enum, auto
from typing import Any

from parainfer.generation.detokenizer import IncrementalDetokenizer
from parainfer.generation.sampling_params import SamplingParams


class SequenceStatus(Enum):
    WAITING = auto()
    RUNNING = auto()
    FINISHED = auto()


class Sequence:
    """Tokens, sampling state and KV-cache block table of one request.

    Attributes:
        request_id: caller-visible id.
        prompt_token_ids: the prompt, P token ids.
        output_token_ids: generated ids so far (the EOS token included when it ends the request).
        params: the request's :class:`SamplingParams`.
        status: a :class:`SequenceStatus`.
        block_table: KV-cache block ids, in order; block i holds positions
            ``[i * block_size, (i + 1) * block_size)``. Empty unless RUNNING.
        finish_reason: "stop" (EOS or a stop string) or "length" (max_tokens or the context
            window); None until FINISHED.
        num_preemptions: how many times this sequence was preempted and recomputed.
        num_computed_tokens: tokens whose keys/values are in the KV cache (0 while WAITING).
        block_hashes: prefix-cache hashes of the full blocks of ``token_ids`` found so far (see
            :mod:`parainfer.generation.kv_cache`); they stay valid as tokens are only appended.
        num_cached_blocks: leading blocks of ``block_table`` already registered in (or taken
            from) the prefix cache.
    """

    def __init__(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        detokenizer: IncrementalDetokenizer,
        prompt: str | None = None,
    ) -> None:
        if not prompt_token_ids:
            raise ValueError(f"request {request_id!r} has an empty prompt; give at least one token")
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_token_ids = list(prompt_token_ids)
        self.output_token_ids: list[int] = []
        self.params = params
        self.generator = params.make_generator()
        self.grammar: Any = None  # a grammar.GrammarState for structured output (set by the engine)
        self.grammar_ticket: Any = None  # a grammar.GrammarTicket while its schema compiles (engine)
        self.pending_logprob: Any = None  # the sampler's TokenLogprob of the token being appended
        self.output_logprobs: list[Any] = []  # one TokenLogprob per output token, if params.logprobs
        self.detokenizer = detokenizer
        self.status = SequenceStatus.WAITING
        self.block_table: list[int] = []
        self.finish_reason: str | None = None
        self.num_preemptions = 0
        self.num_computed_tokens = 0
        self.block_hashes: list[bytes] = []
        self.num_cached_blocks = 0

    def __repr__(self) -> str:
        return (
            f"Sequence({self.request_id!r}, {self.status.name}, prompt={self.num_prompt_tokens}, "
            f"out={self.num_completion_tokens}, blocks={len(self.block_table)})"
        )

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_completion_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def num_tokens(self) -> int:
        """Prompt plus output tokens."""
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def token_ids(self) -> list[int]:
        """Prompt then output token ids (what a prefill, or a recompute after preemption, runs)."""
        return self.prompt_token_ids + self.output_token_ids

    @property
    def is_prefilling(self) -> bool:
        """More than the last token is still missing from the KV cache: a prefill chunk comes next."""
        return self.num_computed_tokens < self.num_tokens - 1

    @property
    def last_token_id(self) -> int:
        return self.output_token_ids[-1] if self.output_token_ids else self.prompt_token_ids[-1]

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED
