"""Continuous batching: which sequences prefill and which decode at each step.

:meth:`Scheduler.schedule` re-forms the running batch at every step (iteration-level
scheduling, Yu et al. 2022, "Orca", OSDI): it decodes the running sequences first, preempting
the newest one (to be recomputed) when the KV cache has no block left, then spends the rest of
the token budget on prefill chunks (chunked prefill, Sarathi-Serve, Agrawal et al. 2024,
https://arxiv.org/abs/2403.02310), unfinished prefills before waiting prompts, which take
their cached prefix blocks (``kv_cache``). The order step by step, and why outputs stay exact:
docs/generation.md, "Scheduling a step".
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from parainfer.generation.kv_cache import BlockManager
from parainfer.generation.sequence import Sequence, SequenceStatus


@dataclass
class ScheduledBatch:
    """What one step runs.

    Attributes:
        decode: sequences that feed their last token (1 query token each), oldest first.
        prefill: sequences that feed a chunk of their tokens (prompt, plus outputs after a
            preemption): positions ``chunks[i] = (start, end)`` of ``prefill[i]``.
        chunks: the (start, end) token positions of each prefill chunk.
        sampled: sequences that get a next token this step, in the order of the runner's
            outputs: every decode, and each prefill whose chunk reaches its last token.
        preempted: sequences preempted while forming this batch (for stats and tests).
    """

    decode: list[Sequence] = field(default_factory=list)
    prefill: list[Sequence] = field(default_factory=list)
    chunks: list[tuple[int, int]] = field(default_factory=list)
    sampled: list[Sequence] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def seqs(self) -> list[Sequence]:
        """Decode then prefill sequences: the order of the model runner's input rows."""
        return self.decode + self.prefill

    @property
    def num_tokens(self) -> int:
        return len(self.decode) + sum(end - start for start, end in self.chunks)

    @property
    def is_empty(self) -> bool:
        return not self.decode and not self.prefill


class Scheduler:
    """FCFS continuous-batching scheduler over a :class:`BlockManager`.

    Args:
        block_manager: owns the KV-cache blocks.
        max_num_seqs: most sequences in the running batch.
        max_num_batched_tokens: token budget of one step (decode tokens + prefill tokens).
    """

    def __init__(self, block_manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int,
                 fixed_chunk: int | None = None) -> None:
        if max_num_seqs < 1 or max_num_batched_tokens < 1:
            raise ValueError(
                f"max_num_seqs and max_num_batched_tokens must be >= 1, got {max_num_seqs}, "
                f"{max_num_batched_tokens}"
            )
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        # Deterministic mode: prefill chunks end at multiples of this (or at the prompt's end), and
        # a chunk waits for a step with room for all of it (None: any piece the budget allows).
        self.fixed_chunk = fixed_chunk
        self.waiting: deque[Sequence] = deque()
        self.running: deque[Sequence] = deque()
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        """Queue a new sequence (status WAITING) at the back of the waiting queue."""
        seq.status = SequenceStatus.WAITING
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> ScheduledBatch:
        """Form this step's batch; see the module docstring for the policy."""
        batch = ScheduledBatch()
        self._schedule_decodes(batch)
        if not batch.preempted:
            self._schedule_prefills(batch)
        batch.sampled = batch.decode + [s for s, (_, end) in zip(batch.prefill, batch.chunks) if end == s.num_tokens]
        return batch

    def advance(self, batch: ScheduledBatch) -> list[Sequence]:
        """Record that the model ran ``batch`` (its keys/values are cached now); returns
        ``batch.sampled``, the sequences whose next token the caller appends."""
        for seq in batch.decode:
            seq.num_computed_tokens = seq.num_tokens
        for seq, (_, end) in zip(batch.prefill, batch.chunks):
            seq.num_computed_tokens = end
        return batch.sampled

    def finish(self, seq: Sequence, reason: str) -> None:
        """Mark ``seq`` FINISHED with ``reason``, free its blocks, drop it from the queues."""
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
        self.block_manager.free(seq)
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)

    def _schedule_decodes(self, batch: ScheduledBatch) -> None:
        kept: list[Sequence] = []
        decode: list[Sequence] = []
        while self.running:
            seq = self.running.popleft()
            if seq.is_prefilling:  # its blocks are all allocated; its next chunk comes with the prefills
                kept.append(seq)
                continue
            while not self.block_manager.can_append(seq):
                if self.running:
                    self._preempt(self.running.pop(), batch)
                else:
                    self._preempt(seq, batch)
                    break
            else:
                self.block_manager.append_slot(seq)
                self.block_manager.cache_blocks(seq, seq.num_tokens)
                kept.append(seq)
                decode.append(seq)
        self.running.extend(kept)
        batch.decode = decode

    def _schedule_prefills(self, batch: ScheduledBatch) -> None:
        budget = self.max_num_batched_tokens - len(batch.decode)
        for seq in self.running:  # chunks of prefills already under way, oldest first
            if budget <= 0:
                return
            if seq.is_prefilling and self._chunk_end(seq, seq.num_computed_tokens, budget) is not None:
                budget -= self._add_chunk(batch, seq, budget)
        while self.waiting and len(self.running) < self.max_num_seqs and budget > 0:
            seq = self.waiting[0]
            if not self.block_manager.can_allocate(seq):
                break
            if self.fixed_chunk and min(seq.num_tokens, self.fixed_chunk) > budget:
                break  # its first chunk waits for a step with room for all of it
            seq.num_computed_tokens = self.block_manager.allocate(seq)
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            budget -= self._add_chunk(batch, seq, budget)

    def _add_chunk(self, batch: ScheduledBatch, seq: Sequence, budget: int) -> int:
        """Schedule the next ``<= budget`` uncached tokens of ``seq`` (registering the full blocks
        they complete in the prefix cache); returns how many."""
        start = seq.num_computed_tokens
        end = self._chunk_end(seq, start, budget)
        assert end is not None, "a chunk was scheduled without room for it"
        self.block_manager.cache_blocks(seq, end)
        batch.prefill.append(seq)
        batch.chunks.append((start, end))
        return end - start

    def _chunk_end(self, seq: Sequence, start: int, budget: int) -> int | None:
        """Where ``seq``'s next prefill chunk from ``start`` ends with ``budget`` tokens left;
        None when (``fixed_chunk``) its whole fixed chunk does not fit this step."""
        if not self.fixed_chunk:
            return min(seq.num_tokens, start + budget)
        end = min(seq.num_tokens, (start // self.fixed_chunk + 1) * self.fixed_chunk)
        return end if end - start <= budget else None

    def _preempt(self, seq: Sequence, batch: ScheduledBatch) -> None:
        self.block_manager.free(seq)
        seq.num_computed_tokens = 0
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)
        batch.preempted.append(seq)
