"""Attention over the paged KV cache for a mixed batch of decode and prefill tokens.

A step's token rows are decode rows first (one per decoding sequence), then each prefilling
sequence's tokens back to back, unpadded. Every row's keys/values are first written into the
cache at ``slot_mapping``; then decode rows attend, all in one ``scaled_dot_product_attention``
call, to their cached keys/values gathered through their block tables (grouped-query heads in
the query-length axis, no copy), and each prefill chunk attends causally to its own
keys/values (a first chunk) or to its cached prefix plus itself (a later chunk). With a
sliding window W (Mistral, Gemma 3's local layers) every query sees only the keys of its last W
positions: the decode mask and the chunk masks also hide older keys. A model may set the
softmax scale (Gemma 3: ``query_pre_attn_scalar ** -0.5``). The layout and masks: docs/generation.md,
"Attention over a mixed batch".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AttentionMetadata:
    """Where each token of the step lives in the KV cache, and how rows group into sequences.

    Attributes:
        slot_mapping: [T] int64, flat cache slot of each token row (block * block_size + offset).
        num_decode: Bd, the number of leading decode rows.
        decode_block_tables: [Bd, MB] int64 block ids, padded with block 0 (masked out).
        decode_mask: [Bd, 1, 1, MB * block_size], True (bool) or 0.0 (float, in the model's
            dtype, -inf elsewhere) where the key position is < the sequence's length.
        prefill_bounds: per prefill chunk, after the decode rows: (first row, end row, first
            position, block ids [ceil(end position / block_size)] or None when the chunk starts
            at position 0).
        prefill_masks: per prefill chunk, its causal mask over the cached keys ([L, end] bool,
            built once per step instead of once per layer), or None (built in each layer; a
            first chunk then uses SDPA's ``is_causal``, so a first chunk longer than the sliding
            window must carry its mask).
        decode_exact: deterministic mode: per decode row, (its block ids [ceil(length /
            block_size)], its context length); each row then attends alone over exactly its own
            keys, so its bits never depend on the other rows (``decode_block_tables`` and
            ``decode_mask`` are None). None: all decode rows in one padded call.
        sliding_window: W, a query at position p attends to keys p - W + 1 .. p (HF's
            ``sliding_window_overlay``: kv_idx > q_idx - W); None: to all keys 0 .. p. The
            masks above must already apply it; ``decode_exact`` rows apply it here.
        global_layers: for a model that interleaves windowed and global layers (Gemma 3), the
            same step's metadata without the window, used by the global layers; else None.
    """

    slot_mapping: torch.Tensor
    num_decode: int
    decode_block_tables: torch.Tensor | None
    decode_mask: torch.Tensor | None
    prefill_bounds: list[tuple[int, int, int, torch.Tensor | None]]
    prefill_masks: list[torch.Tensor | None] | None = None
    decode_exact: list[tuple[torch.Tensor, int]] | None = None
    sliding_window: int | None = None
    global_layers: AttentionMetadata | None = None


def paged_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float | None = None,
) -> torch.Tensor:
    """Write this step's keys/values into the cache and attend.

    Args:
        q: [T, H, D] queries (rotary already applied).
        k, v: [T, KV, D] keys (rotary applied) and values of the step's tokens.
        kv_cache: [2, num_blocks, block_size, KV, D] this layer's keys and values (written in place).
        meta: the step's :class:`AttentionMetadata`.
        scale: softmax scale (None: SDPA's 1 / sqrt(D)).

    Returns:
        [T, H * D] attention output, rows in the order of ``q``.
    """
    num_tokens, num_heads, head_dim = q.shape
    num_kv = k.shape[1]
    kv_cache[0].view(-1, num_kv, head_dim).index_copy_(0, meta.slot_mapping, k)
    kv_cache[1].view(-1, num_kv, head_dim).index_copy_(0, meta.slot_mapping, v)
    parts = []
    bd = meta.num_decode
    if bd and meta.decode_exact is not None:
        parts.extend(_decode_one(q[i:i + 1], kv_cache, blocks, length, meta.sliding_window, scale)
                     .reshape(1, num_heads * head_dim)
                     for i, (blocks, length) in enumerate(meta.decode_exact))
    elif bd:
        parts.append(_decode(q[:bd], kv_cache, meta, scale).reshape(bd, num_heads * head_dim))
    masks = meta.prefill_masks or [None] * len(meta.prefill_bounds)
    for (start, end, first, blocks), mask in zip(meta.prefill_bounds, masks):
        if blocks is None:
            parts.append(_prefill(q[start:end], k[start:end], v[start:end], mask, scale))
        else:
            parts.append(_prefill_chunk(q[start:end], kv_cache, blocks, first, mask, scale))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)


def _decode(q: torch.Tensor, kv_cache: torch.Tensor, meta: AttentionMetadata,
            scale: float | None = None) -> torch.Tensor:
    """q [Bd, H, D] -> [Bd, KV, G, D], attending to each sequence's cached context.

    Keys and values are gathered together, whole blocks at a time (``_gather_blocks``).
    """
    bd, num_heads, head_dim = q.shape
    num_kv = kv_cache.shape[3]
    kv = _gather_blocks(kv_cache, meta.decode_block_tables.flatten())
    kv = kv.view(2, bd, -1, num_kv, head_dim).transpose(2, 3)
    q = q.view(bd, num_kv, num_heads // num_kv, head_dim)
    return F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=meta.decode_mask, scale=scale)


def _decode_one(q: torch.Tensor, kv_cache: torch.Tensor, blocks: torch.Tensor, length: int,
                window: int | None = None, scale: float | None = None) -> torch.Tensor:
    """One decode row alone: q [1, H, D] over exactly its ``length`` cached keys/values (in
    ``blocks``; only the last ``window`` of them with a sliding window), no mask, no padding;
    returns [1, KV, G, D]. The same shapes whatever the batch."""
    _, num_heads, head_dim = q.shape
    num_kv = kv_cache.shape[3]
    first = max(0, length - window) if window else 0
    kv = _gather_blocks(kv_cache, blocks)[:, first:length].transpose(1, 2).unsqueeze(1)  # [2, 1, KV, L, D]
    return F.scaled_dot_product_attention(q.view(1, num_kv, num_heads // num_kv, head_dim), kv[0], kv[1],
                                          scale=scale)


def _prefill(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
             scale: float | None = None) -> torch.Tensor:
    """Causal attention of one sequence from position 0: q [L, H, D], k/v [L, KV, D] -> [L, H*D].
    ``mask``: [L, L] bool (``chunk_mask(0, L, window)``), or None for plain causal attention."""
    length, num_heads, head_dim = q.shape
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1).unsqueeze(0),
        k.transpose(0, 1).unsqueeze(0),
        v.transpose(0, 1).unsqueeze(0),
        attn_mask=mask,
        is_causal=mask is None,
        enable_gqa=num_heads != k.shape[1],
        scale=scale,
    )
    return out[0].transpose(0, 1).reshape(length, num_heads * head_dim)


def chunk_mask(first: int, length: int, window: int | None = None) -> torch.Tensor:
    """[length, first + length] bool: the query at position first + i sees keys 0 .. first + i
    (with a sliding ``window`` W only keys first + i - W + 1 .. first + i)."""
    keys = torch.arange(first + length).unsqueeze(0)
    queries = (first + torch.arange(length)).unsqueeze(1)
    mask = keys <= queries
    return mask if window is None else mask & (keys > queries - window)


def _prefill_chunk(q: torch.Tensor, kv_cache: torch.Tensor, blocks: torch.Tensor, first: int,
                   mask: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
    """A prefill chunk at positions first .. first + L - 1: q [L, H, D] attends to the cached
    keys/values of positions 0 .. first + L - 1 (``blocks`` holds them); returns [L, H*D].
    ``mask``: ``chunk_mask(first, L)``, built here when None."""
    length, num_heads, head_dim = q.shape
    num_kv = kv_cache.shape[3]
    end = first + length
    kv = _gather_blocks(kv_cache, blocks)[:, :end]
    if mask is None:
        mask = chunk_mask(first, length)
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1).unsqueeze(0),
        kv[0].transpose(0, 1).unsqueeze(0),
        kv[1].transpose(0, 1).unsqueeze(0),
        attn_mask=mask,
        enable_gqa=num_heads != num_kv,
        scale=scale,
    )
    return out[0].transpose(0, 1).reshape(length, num_heads * head_dim)


def _gather_blocks(kv_cache: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """Keys and values of ``blocks`` (1-D block ids), in order: [2, len(blocks) * block_size, KV, D].

    Gathered together, whole blocks at a time (one ``index_select`` of block_size * KV * D
    contiguous elements per block), which is about 2x faster than indexing keys and values
    separately.
    """
    _, num_blocks, _, num_kv, head_dim = kv_cache.shape
    return kv_cache.view(2, num_blocks, -1).index_select(1, blocks).view(2, -1, num_kv, head_dim)
