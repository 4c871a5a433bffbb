"""BlockManager: allocation, appending slots, freeing, and no leaks."""

from __future__ import annotations

import pytest

from parainfer.generation.kv_cache import BlockManager, KVCache
from gen_helpers import seq


def test_allocate_takes_ceil_blocks_and_free_returns_them():
    bm = BlockManager(num_blocks=10, block_size=4)
    a, b = seq(5, "a"), seq(8, "b")
    bm.allocate(a)
    bm.allocate(b)
    assert len(a.block_table) == 2 and len(b.block_table) == 2
    assert set(a.block_table).isdisjoint(b.block_table)
    assert bm.num_free_blocks == 6
    bm.free(a)
    assert a.block_table == [] and bm.num_free_blocks == 8
    bm.free(b)
    assert bm.num_free_blocks == 10


def test_append_slot_adds_a_block_only_at_a_boundary():
    bm = BlockManager(num_blocks=3, block_size=4)
    s = seq(4)
    bm.allocate(s)
    assert len(s.block_table) == 1
    bm.append_slot(s)  # 4 tokens cached in 1 block: position 3 fits
    assert len(s.block_table) == 1
    s.output_token_ids.append(7)  # 5 tokens: position 4 needs block 2
    assert bm.can_append(s)
    bm.append_slot(s)
    assert len(s.block_table) == 2
    for _ in range(3):
        s.output_token_ids.append(7)
        bm.append_slot(s)
    assert len(s.block_table) == 2  # positions 5..7 fit
    s.output_token_ids.append(7)
    bm.append_slot(s)
    assert len(s.block_table) == 3 and bm.num_free_blocks == 0
    s.output_token_ids.append(7)
    s.output_token_ids.extend([7] * 3)
    assert not bm.can_append(s)
    with pytest.raises(RuntimeError):
        bm.append_slot(s)


def test_can_allocate_and_errors():
    bm = BlockManager(num_blocks=2, block_size=4)
    assert bm.can_allocate(seq(8)) and not bm.can_allocate(seq(9))
    with pytest.raises(RuntimeError):
        bm.allocate(seq(9))
    s = seq(3)
    bm.allocate(s)
    with pytest.raises(RuntimeError):
        bm.allocate(s)
    with pytest.raises(ValueError):
        BlockManager(0, 4)


def test_kv_cache_shape_and_bytes():
    kv = KVCache(num_layers=2, num_blocks=5, block_size=4, num_kv_heads=3, head_dim=8)
    assert kv.tensor.shape == (2, 2, 5, 4, 3, 8)
    layer = kv.layer(1)
    assert layer.shape == (2, 5, 4, 3, 8) and layer.is_contiguous()
    assert KVCache.bytes_per_token(2, 3, 8, kv.tensor.dtype) * 5 * 4 == kv.nbytes
