"""Settings of the generation engine, with defaults sized for a small model on a CPU."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from parainfer.errors import UsageError
from parainfer.generation.grammar import GrammarSettings

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class EngineConfig:
    """Engine settings.

    Attributes:
        dtype: "float32" (default; matches Hugging Face fp32 outputs token for token) or
            "bfloat16" (faster matmuls on CPUs with AVX512-BF16/AMX, half the cache).
        block_size: KV-cache block size in tokens.
        num_blocks: KV-cache blocks; None sizes the cache from ``kv_cache_gb``, capped at what
            ``max_num_seqs`` full-length sequences could use.
        kv_cache_gb: cache memory budget in GiB when ``num_blocks`` is None.
        max_num_seqs: most sequences in the running batch.
        max_num_batched_tokens: token budget of one step (prefill + decode tokens).
        max_model_len: context window; None uses the model's ``max_position_embeddings``
            (a larger value is clipped to it).
        onednn: prepack linear weights for oneDNN (faster CPU matmuls; outputs equal F.linear
            to fp32 rounding). False uses plain ``F.linear``.
        threads: torch intra-op threads (sets ``torch.set_num_threads``, process-wide); None
            keeps ``torch.get_num_threads()``.
        enable_prefix_caching: automatic prefix caching (full KV blocks of identical prefixes
            are shared and kept after their sequence ends; see ``kv_cache``). Outputs are the
            same either way; False recomputes every prompt (``--no-prefix-cache``).
        grammar: structured output: the compile time budget, the compiled-grammar cache's
            bytes, compile threads and schema limits (:class:`~parainfer.generation.grammar.GrammarSettings`).
        deterministic: a sequence's computation does not depend on the rest of the running
            batch: each decoding sequence attends over exactly its own keys (no padding to the
            batch's longest context), prompts are prefilled in chunks that end at multiples of
            ``deterministic_chunk`` (a function of the prompt alone, never of the budget others
            left), prefix caching is off (a cached prefix changes how the rest of a prompt is
            computed), and a load-time probe checks that the linear layers give a row the same
            bits at every batch row count (``LLMEngine.batch_invariance``). Greedy tokens then do
            not depend on the batch. Costs: docs/benchmarks.md, "Deterministic generation".
    """

    dtype: str = "float32"
    block_size: int = 16
    num_blocks: int | None = None
    kv_cache_gb: float = 1.0
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 1024
    max_model_len: int | None = None
    onednn: bool = True
    threads: int | None = None
    enable_prefix_caching: bool = True
    grammar: GrammarSettings = field(default_factory=GrammarSettings)
    deterministic: bool = False

    @property
    def deterministic_chunk(self) -> int:
        """Prefill chunk length in deterministic mode: the step budget less a row for every
        running sequence (so a whole chunk always fits beside the decode rows), rounded down to a
        whole number of blocks, at least one block."""
        room = self.max_num_batched_tokens - self.max_num_seqs
        return max(self.block_size, room // self.block_size * self.block_size)

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise UsageError(f"dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")
        for name in ("block_size", "max_num_seqs", "max_num_batched_tokens"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_blocks is not None and self.num_blocks < 1:
            raise UsageError(f"num_blocks must be >= 1 or None, got {self.num_blocks}")
        if self.kv_cache_gb <= 0:
            raise UsageError(f"kv_cache_gb must be > 0, got {self.kv_cache_gb}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    def replace(self, **changes: object) -> EngineConfig:
        """A copy with ``changes`` applied; unknown names raise UsageError."""
        known = {f.name for f in dataclasses.fields(self)}
        bad = sorted(set(changes) - known)
        if bad:
            raise UsageError(f"unknown engine settings {bad}; known: {sorted(known)}")
        return dataclasses.replace(self, **changes)

    def with_num_blocks(self, bytes_per_token: int, max_model_len: int) -> EngineConfig:
        """Fill in ``num_blocks`` from the memory budget (bytes_per_token: cache bytes per token)."""
        if self.num_blocks is not None:
            return self
        budget = int(self.kv_cache_gb * 2**30 // (bytes_per_token * self.block_size))
        useful = self.max_num_seqs * -(-max_model_len // self.block_size)
        return dataclasses.replace(self, num_blocks=max(1, min(budget, useful)))
