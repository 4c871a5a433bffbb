"""The paged KV cache: fixed-size blocks handed out from a free list, and the tensors behind them.

Paging as in vLLM (Kwon et al. 2023, "Efficient Memory Management for Large Language Model
Serving with PagedAttention", https://arxiv.org/abs/2309.06180): a sequence's keys and values
live in blocks of ``block_size`` token slots that need not be contiguous; its block table maps
logical block i (positions ``[i*block_size, (i+1)*block_size)``) to a physical block id. A
sequence holds at most one partly filled block, so memory waste is < block_size tokens per
sequence, and blocks return to the free list the moment a sequence finishes or is preempted.

Slot index of position p of a sequence: ``block_table[p // block_size] * block_size
+ p % block_size``, an index into the cache viewed as [num_blocks * block_size, ...].
"""

from __future__ import annotations

from collections import deque

import torch

from parainfer.generation.sequence import Sequence


class BlockManager:
    """Hands out KV-cache blocks to sequences. Owns no tensors, only block ids.

    Args:
        num_blocks: total blocks in the cache (>= 1).
        block_size: token slots per block (>= 1; 16 is the usual choice).
    """

    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need num_blocks >= 1 and block_size >= 1, got {num_blocks}, {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._free: deque[int] = deque(range(num_blocks))

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    def blocks_needed(self, num_tokens: int) -> int:
        """Blocks that hold ``num_tokens`` token slots: ceil(num_tokens / block_size)."""
        return -(-num_tokens // self.block_size)

    def can_allocate(self, seq: Sequence) -> bool:
        """True when the free list can hold all of ``seq``'s tokens (a prefill or recompute)."""
        return self.blocks_needed(seq.num_tokens) <= len(self._free)

    def allocate(self, seq: Sequence) -> None:
        """Give ``seq`` blocks for all its ``num_tokens`` tokens. Raises RuntimeError when short."""
        if seq.block_table:
            raise RuntimeError(f"{seq!r} already holds blocks")
        n = self.blocks_needed(seq.num_tokens)
        if n > len(self._free):
            raise RuntimeError(f"{seq!r} needs {n} blocks, {len(self._free)} free")
        seq.block_table = [self._free.popleft() for _ in range(n)]

    def can_append(self, seq: Sequence) -> bool:
        """True when ``seq`` can store the KV of its last token (position ``num_tokens - 1``)."""
        return not self._needs_block(seq) or len(self._free) > 0

    def append_slot(self, seq: Sequence) -> None:
        """Make room for position ``num_tokens - 1``: adds a block when the last one is full."""
        if self._needs_block(seq):
            if not self._free:
                raise RuntimeError(f"no free block for {seq!r}; check can_append first")
            seq.block_table.append(self._free.popleft())

    def free(self, seq: Sequence) -> None:
        """Return all of ``seq``'s blocks to the free list."""
        self._free.extend(reversed(seq.block_table))
        seq.block_table = []

    def _needs_block(self, seq: Sequence) -> bool:
        return len(seq.block_table) * self.block_size < seq.num_tokens


class KVCache:
    """The cache tensor: [num_layers, 2 (key, value), num_blocks, block_size, num_kv_heads, head_dim].

    Zero-initialised, so slots that attention reads but masks out (the tail of a sequence's
    last block, padding) hold finite values: a masked weight of 0 times a finite value is 0.
    """

    def __init__(
        self,
        num_layers: int,
        num_blocks: int,
        block_size: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.tensor = torch.zeros(num_layers, 2, num_blocks, block_size, num_kv_heads, head_dim, dtype=dtype)

    def layer(self, i: int) -> torch.Tensor:
        """Layer i's keys and values: a [2, num_blocks, block_size, num_kv_heads, head_dim] view."""
        return self.tensor[i]

    @staticmethod
    def bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
        """Cache bytes one token takes across all layers (keys and values)."""
        return num_layers * 2 * num_kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()

    @property
    def nbytes(self) -> int:
        return self.tensor.numel() * self.tensor.element_size()
