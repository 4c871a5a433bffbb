"""The paged KV cache: fixed-size blocks handed out by a block manager, and the tensors behind them.

``BlockManager`` owns the free list, each sequence's block table and automatic prefix caching
(full blocks named by a chained SHA-256 of their token ids, shared by reference count, kept in
an evictable LRU pool once free); ``KVCache`` owns the tensors. Paging as in vLLM (Kwon et al.
2023, PagedAttention, https://arxiv.org/abs/2309.06180); prefix caching as vLLM documents it
(https://docs.vllm.ai/en/latest/design/prefix_caching.html). Slot of position p:
``block_table[p // block_size] * block_size + p % block_size``. The algorithm:
docs/generation.md, "The paged KV cache" and "Automatic prefix caching".
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict, deque

import torch

from parainfer.generation.sequence import Sequence


def block_hash(parent: bytes, token_ids: list[int]) -> bytes:
    """SHA-256 digest (32 bytes) of a full block: the parent block's digest (b"" for the first
    block) followed by the block's token ids as int64."""
    h = hashlib.sha256(parent)
    h.update(array("q", token_ids).tobytes())
    return h.digest()


class BlockManager:
    """Hands out KV-cache blocks to sequences. Owns no tensors, only block ids.

    Args:
        num_blocks: total blocks in the cache (>= 1).
        block_size: token slots per block (>= 1; 16 is the usual choice).
        enable_prefix_caching: share full blocks of identical prefixes (see the module
            docstring); False gives every sequence blocks of its own, freed at once.

    Attributes:
        stats: prefix-cache counters: ``prefix_cache_queried_tokens`` (tokens of sequences
            looked up at allocation), ``prefix_cache_hit_tokens`` (of those, found cached: their
            prefill is skipped), ``prefix_cache_evictions`` (cached blocks reused for new content).
    """

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need num_blocks >= 1 and block_size >= 1, got {num_blocks}, {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self._free: deque[int] = deque(range(num_blocks))  # blocks holding nothing worth keeping
        self._ref = [0] * num_blocks
        self._hash_of: list[bytes | None] = [None] * num_blocks
        self._cached: dict[bytes, int] = {}  # hash -> block id, in use or evictable
        self._evictable: OrderedDict[int, None] = OrderedDict()  # ref 0 with a hash, least recent first
        self.stats = {"prefix_cache_queried_tokens": 0, "prefix_cache_hit_tokens": 0, "prefix_cache_evictions": 0}

    @property
    def num_free_blocks(self) -> int:
        """Blocks no sequence holds: the free list plus the evictable cached blocks."""
        return len(self._free) + len(self._evictable)

    @property
    def num_cached_blocks(self) -> int:
        """Blocks with a registered hash (in use or evictable)."""
        return len(self._cached)

    def blocks_needed(self, num_tokens: int) -> int:
        """Blocks that hold ``num_tokens`` token slots: ceil(num_tokens / block_size)."""
        return -(-num_tokens // self.block_size)

    def can_allocate(self, seq: Sequence) -> bool:
        """True when ``seq``'s tokens fit: its cached prefix blocks plus new blocks for the rest."""
        hits = self._match(seq)
        reclaimed = sum(1 for b in hits if self._ref[b] == 0)  # evictable now, taken by the hit
        return self.blocks_needed(seq.num_tokens) - len(hits) <= self.num_free_blocks - reclaimed

    def allocate(self, seq: Sequence) -> int:
        """Give ``seq`` blocks for all its ``num_tokens`` tokens: its cached prefix blocks (by
        reference), then fresh ones. Returns the number of tokens found cached (a multiple of
        block_size, < num_tokens): the caller's prefill starts there.

        Raises:
            RuntimeError: ``seq`` already holds blocks, or there are not enough free blocks.
        """
        if seq.block_table:
            raise RuntimeError(f"{seq!r} already holds blocks")
        if not self.can_allocate(seq):
            raise RuntimeError(f"{seq!r} needs {self.blocks_needed(seq.num_tokens)} blocks, "
                               f"{self.num_free_blocks} free")
        hits = self._match(seq)
        for b in hits:
            if self._ref[b] == 0:
                del self._evictable[b]
            self._ref[b] += 1
        fresh = [self._take() for _ in range(self.blocks_needed(seq.num_tokens) - len(hits))]
        seq.block_table = hits + fresh
        seq.num_cached_blocks = len(hits)
        cached = len(hits) * self.block_size
        if self.enable_prefix_caching:
            self.stats["prefix_cache_queried_tokens"] += seq.num_tokens
            self.stats["prefix_cache_hit_tokens"] += cached
        return cached

    def can_append(self, seq: Sequence) -> bool:
        """True when ``seq`` can store the KV of its last token (position ``num_tokens - 1``)."""
        return not self._needs_block(seq) or self.num_free_blocks > 0

    def append_slot(self, seq: Sequence) -> None:
        """Make room for position ``num_tokens - 1``: adds a block when the last one is full."""
        if self._needs_block(seq):
            if not self.num_free_blocks:
                raise RuntimeError(f"no free block for {seq!r}; check can_append first")
            seq.block_table.append(self._take())

    def cache_blocks(self, seq: Sequence, num_computed: int) -> None:
        """Register the hashes of ``seq``'s full blocks among its first ``num_computed`` tokens
        (call it once their keys/values are scheduled to be written). A block whose prefix is
        already registered under another block stays private (freed to the free list)."""
        if not self.enable_prefix_caching:
            return
        full = min(num_computed // self.block_size, len(seq.block_table))
        hashes = self._hashes(seq, full)
        for i in range(seq.num_cached_blocks, full):
            b, h = seq.block_table[i], hashes[i]
            if self._hash_of[b] is None and h not in self._cached:
                self._hash_of[b] = h
                self._cached[h] = b
        seq.num_cached_blocks = max(seq.num_cached_blocks, full)

    def free(self, seq: Sequence) -> None:
        """Drop ``seq``'s references; blocks no one holds go to the free list, or, when cached,
        to the evictable pool (tail blocks first, so they are evicted before the head)."""
        for b in reversed(seq.block_table):
            self._ref[b] -= 1
            if self._ref[b] == 0:
                if self._hash_of[b] is None:
                    self._free.append(b)
                else:
                    self._evictable[b] = None
        seq.block_table = []
        seq.num_cached_blocks = 0

    def _take(self) -> int:
        """A block for new content (ref count 1): the free list first, else evict the LRU cached one."""
        if self._free:
            b = self._free.popleft()
        else:
            b, _ = self._evictable.popitem(last=False)
            del self._cached[self._hash_of[b]]
            self._hash_of[b] = None
            self.stats["prefix_cache_evictions"] += 1
        self._ref[b] = 1
        return b

    def _match(self, seq: Sequence) -> list[int]:
        """Registered blocks holding ``seq``'s longest cached prefix, at most num_tokens - 1 tokens."""
        if not self.enable_prefix_caching:
            return []
        limit = (seq.num_tokens - 1) // self.block_size
        hits = []
        for h in self._hashes(seq, limit):
            b = self._cached.get(h)
            if b is None:
                break
            hits.append(b)
        return hits

    def _hashes(self, seq: Sequence, n: int) -> list[bytes]:
        """The chained hashes of ``seq``'s first ``n`` full blocks (memoised on the sequence;
        its tokens only ever grow, so they stay valid, preemptions included)."""
        hashes, bs = seq.block_hashes, self.block_size
        if len(hashes) < n:
            tokens = seq.token_ids
            for i in range(len(hashes), n):
                hashes.append(block_hash(hashes[-1] if hashes else b"", tokens[i * bs:(i + 1) * bs]))
        return hashes[:n] if len(hashes) > n else hashes

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
