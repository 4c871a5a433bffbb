"""Runs one scheduled batch through the model: build the flat inputs, forward, sample.

Input layout (see :mod:`parainfer.generation.attention`): decode rows first, one per decoding
sequence (its last token at position ``num_tokens - 1``), then each prefilling sequence's
chunk of tokens at positions ``start .. end - 1`` (the whole prompt, ``0 .. num_tokens - 1``,
unless the prefill is chunked). Logits are computed only for the last row of each sequence
that gets a token this step (``batch.sampled``), so the LM head costs B rows, not T.
"""

from __future__ import annotations

import dataclasses

import torch

from parainfer.generation.attention import AttentionMetadata, chunk_mask
from parainfer.generation.kv_cache import KVCache
from parainfer.generation.llama import DecoderForward
from parainfer.generation.sampler import sample
from parainfer.generation.scheduler import ScheduledBatch


class ModelRunner:
    """Owns the model forward and the KV cache tensors.

    Args:
        model: the :class:`DecoderForward` weights (its ``sliding_window`` shapes the masks; when
            some of its ``layer_windows`` are None, as in Gemma 3, the step's metadata also
            carries the global layers' masks in ``global_layers``).
        kv_cache: the paged cache (its block ids come from the scheduler's BlockManager).
    """

    def __init__(self, model: DecoderForward, kv_cache: KVCache, deterministic: bool = False) -> None:
        self.model = model
        self.kv_cache = kv_cache
        self.block_size = kv_cache.block_size
        self.window = getattr(model, "sliding_window", None)
        self.mixed = self.window is not None and None in getattr(model, "layer_windows", ())
        self.deterministic = deterministic  # decode rows attend one by one (AttentionMetadata.decode_exact)

    @torch.inference_mode()
    def run(self, batch: ScheduledBatch) -> list[int | Exception]:
        """Forward the batch and sample; returns one next-token id per ``batch.sampled`` entry
        (or the exception its sampling raised: see ``sampler.sample``)."""
        input_ids, positions, meta, logit_rows = self.prepare(batch)
        logits = self.model.forward(input_ids, positions, meta, self.kv_cache, logit_rows)
        return sample(logits, batch.sampled)

    def prepare(self, batch: ScheduledBatch) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata, torch.Tensor]:
        """Flat input ids [T], positions [T], attention metadata and logit rows [B]."""
        bs = self.block_size
        ids: list[int] = []
        pos: list[int] = []
        slots: list[int] = []
        for seq in batch.decode:
            p = seq.num_tokens - 1
            ids.append(seq.last_token_id)
            pos.append(p)
            slots.append(seq.block_table[p // bs] * bs + p % bs)
        logit_rows = list(range(len(batch.decode)))
        bounds = []
        for seq, (first, last) in zip(batch.prefill, batch.chunks):
            row = len(ids)
            ids.extend(seq.token_ids[first:last])
            pos.extend(range(first, last))
            table = seq.block_table
            slots.extend(table[p // bs] * bs + p % bs for p in range(first, last))
            # A chunk after the first attends to the cached keys of positions 0 .. last - 1.
            blocks = torch.tensor(table[: -(-last // bs)], dtype=torch.long) if first else None
            bounds.append((row, row + last - first, first, blocks))
            if last == seq.num_tokens:
                logit_rows.append(row + last - first - 1)
        exact = None
        if self.deterministic and batch.decode:
            exact = [(torch.tensor(s.block_table[: -(-s.num_tokens // bs)], dtype=torch.long), s.num_tokens)
                     for s in batch.decode]
        tables, mask = self._decode_tables(batch) if exact is None else (None, None)
        meta = AttentionMetadata(
            slot_mapping=torch.tensor(slots, dtype=torch.long),
            num_decode=len(batch.decode),
            decode_block_tables=tables,
            decode_mask=mask,
            prefill_bounds=bounds,
            prefill_masks=[self._chunk_mask(b) for b in bounds],
            decode_exact=exact,
            sliding_window=self.window,
        )
        if self.mixed:  # Gemma 3: the global layers see every key
            tables, mask = self._decode_tables(batch, None) if exact is None else (None, None)
            meta.global_layers = dataclasses.replace(
                meta, decode_block_tables=tables, decode_mask=mask, sliding_window=None,
                prefill_masks=[self._chunk_mask(b, None) for b in bounds])
        return (
            torch.tensor(ids, dtype=torch.long),
            torch.tensor(pos, dtype=torch.long),
            meta,
            torch.tensor(logit_rows, dtype=torch.long),
        )

    def _chunk_mask(self, bound: tuple, window: int | None | bool = False) -> torch.Tensor | None:
        """A chunk's mask (``chunk_mask``) for ``window`` (default: the model's); None for a
        first chunk that plain causal attention covers (no window, or the chunk fits in it)."""
        window = self.window if window is False else window
        row, end, first, blocks = bound
        if blocks is None and (window is None or end - row <= window):
            return None
        return chunk_mask(first, end - row, window)

    def _decode_tables(self, batch: ScheduledBatch, window: int | None | bool = False
                       ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Block tables padded to the longest one [Bd, MB], and the key mask [Bd, 1, 1, MB * bs]:
        additive (0 / -inf in the model's dtype), built once per step; SDPA would otherwise turn
        a bool mask into this in every layer. ``window``: default the model's."""
        window = self.window if window is False else window
        if not batch.decode:
            return None, None
        width = max(len(s.block_table) for s in batch.decode)
        tables = torch.tensor([s.block_table + [0] * (width - len(s.block_table)) for s in batch.decode])
        lengths = torch.tensor([s.num_tokens for s in batch.decode])
        keys = torch.arange(width * self.block_size).unsqueeze(0)
        past_end = keys >= lengths.unsqueeze(1)
        if window is not None:  # the query at position length - 1 sees keys > length - 1 - window
            past_end |= keys < (lengths - window).unsqueeze(1)
        mask = torch.zeros(past_end.shape, dtype=self.kv_cache.tensor.dtype).masked_fill_(past_end, float("-inf"))
        return tables, mask[:, None, None, :]
