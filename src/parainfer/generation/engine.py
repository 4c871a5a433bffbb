"""LLMEngine: continuous-batching text generation over a paged KV cache.

The step loop is three lines (nano-vllm style): ``schedule`` (which sequences prefill and
which decode, preempting when blocks run out) -> ``ModelRunner.run`` (one forward over the
mixed batch, then sampling) -> ``append_token`` (detokenize, finish on EOS, stop string or
max_tokens; a finished sequence's blocks are freed at once). Threading: ``add_request`` and
``abort_request`` may be called from any thread (they post to an inbox that ``step``
drains); ``step`` itself must run in one thread at a time. A request with a
``response_format`` whose grammar is not compiled yet waits outside the scheduler while the
``GrammarCompiler``'s threads compile it; the other sequences keep stepping, and it joins the
batch once compiled, or fails alone when its time budget passes. A worked example:
docs/generation.md, "Using it".
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence as SequenceABC
from pathlib import Path
from typing import Any

import torch

from parainfer.errors import UsageError
from parainfer.generation.detokenizer import IncrementalDetokenizer
from parainfer.generation.engine_config import EngineConfig
from parainfer.generation.engine_contract import OutputCallback, deliver_outputs
from parainfer.generation.grammar import GrammarCompiler, GrammarState
from parainfer.generation.invariance import batch_invariance
from parainfer.generation.kv_cache import BlockManager, KVCache
from parainfer.generation.llama import DecoderForward
from parainfer.generation.model_runner import ModelRunner
from parainfer.generation.outputs import GenerationResult, RequestOutput
from parainfer.generation.postprocess import append_token, eos_token_ids, make_output, make_result
from parainfer.generation.sampling_params import SamplingParams
from parainfer.generation.scheduler import Scheduler
from parainfer.generation.sequence import Sequence

log = logging.getLogger(__name__)


def chat_prompt_ids(tokenizer: Any, messages: list[dict[str, Any]],
                    tools: list[dict[str, Any]] | None = None) -> list[int]:
    """Prompt token ids of chat ``messages`` through ``tokenizer``'s chat template (an HF
    tokenizer or the GGUF tokenizer of the llama.cpp engine), the assistant generation prompt
    appended; ``tools`` (OpenAI function specs) go to the template, which renders them if it
    knows how."""
    extra = {"tools": tools} if tools else {}
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, **extra)
    if isinstance(out, dict) or hasattr(out, "keys"):
        out = out["input_ids"]
    return list(out)


class LLMEngine:
    """Generates text for many requests at once; requests join and leave at every step.

    Args:
        model: a local HF causal-LM directory of a type in ``llama.ARCHS`` (Llama, Mistral, Qwen2, Qwen3).
        config: engine settings; keyword arguments override its fields
            (``LLMEngine(path, dtype="bfloat16", max_num_seqs=32)``).

    Attributes:
        tokenizer: the HF tokenizer.
        max_model_len: context window in tokens; ``prompt + max_tokens`` must fit in it.
        config: the resolved :class:`EngineConfig` (``num_blocks`` filled in).
        stats: counters: steps, prefill_tokens (computed), decode_tokens, preemptions, busy_s;
            prefix_cache_queried_tokens, prefix_cache_hit_tokens (prefill skipped: read from the
            prefix cache), prefix_cache_evictions (blocks).

    It satisfies ``engine_contract.GenerationEngine`` (``name`` "parainfer"); the other engines
    are built by ``engines.build_engine``.
    """

    name = "parainfer"

    def __init__(self, model: str | Path, config: EngineConfig | None = None, **overrides: Any) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(model)
        if not (path / "config.json").exists():
            raise UsageError(f"model must be a local Hugging Face model directory with config.json, got {model}")
        tokenizer = AutoTokenizer.from_pretrained(path)
        hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        self._setup(hf_model, tokenizer, config, overrides)

    @classmethod
    def from_hf(cls, hf_model: Any, tokenizer: Any, config: EngineConfig | None = None, **overrides: Any) -> LLMEngine:
        """Build an engine from an already loaded HF model and tokenizer (weights are copied
        into the engine's dtype; the HF model is left as it was)."""
        engine = cls.__new__(cls)
        engine._setup(hf_model, tokenizer, config, overrides)
        return engine

    def _setup(self, hf_model: Any, tokenizer: Any, config: EngineConfig | None, overrides: dict) -> None:
        cfg = (config or EngineConfig()).replace(**overrides)
        if cfg.deterministic and cfg.enable_prefix_caching:
            cfg = cfg.replace(enable_prefix_caching=False)  # a cached prefix changes how the rest is computed
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        hf_cfg = hf_model.config
        window = getattr(hf_cfg, "max_position_embeddings", None) or 2048
        self.max_model_len = min(cfg.max_model_len or window, window)
        self.tokenizer = tokenizer
        with torch.inference_mode():
            self.model = DecoderForward(hf_model, cfg.torch_dtype, self.max_model_len, pack=cfg.onednn)
        m = self.model
        cfg = cfg.with_num_blocks(
            KVCache.bytes_per_token(m.num_layers, m.num_kv_heads, m.head_dim, cfg.torch_dtype),
            self.max_model_len,
        )
        self.config = cfg
        kv = KVCache(m.num_layers, cfg.num_blocks, cfg.block_size, m.num_kv_heads, m.head_dim, cfg.torch_dtype)
        self.block_manager = BlockManager(cfg.num_blocks, cfg.block_size, cfg.enable_prefix_caching)
        self.scheduler = Scheduler(self.block_manager, cfg.max_num_seqs, cfg.max_num_batched_tokens,
                                   cfg.deterministic_chunk if cfg.deterministic else None)
        self.runner = ModelRunner(m, kv, cfg.deterministic)
        self.batch_invariance = batch_invariance(m, cfg)
        self.eos_token_ids = eos_token_ids(hf_model, tokenizer)
        self.grammars = GrammarCompiler(tokenizer, int(hf_cfg.vocab_size), self.eos_token_ids, cfg.grammar)
        self._init_queues()

    def _init_queues(self) -> None:
        """The request inbox, callbacks and counters (after ``block_manager`` and ``grammars`` exist)."""
        self._compiling: list[Sequence] = []  # waiting for their grammar (seq.grammar_ticket)
        self._wakeup = threading.Event()  # set by new requests, aborts and finished compiles
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._callbacks: dict[str, OutputCallback] = {}
        self._live: dict[str, Sequence] = {}
        self._ids = itertools.count()
        self.stats = {"steps": 0, "prefill_tokens": 0, "decode_tokens": 0, "preemptions": 0, "busy_s": 0.0}
        self.stats.update(self.block_manager.stats)  # prefix cache: queried, hit (prefill skipped), evicted tokens

    # ---- requests -------------------------------------------------------------------------

    def format_chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> list[int]:
        """Prompt token ids for chat ``messages`` ([{"role": ..., "content": ...}]) with the
        model's chat template and the assistant generation prompt appended; ``tools`` (OpenAI's
        function specs) go to the template, which renders them if it knows how."""
        return chat_prompt_ids(self.tokenizer, messages, tools)

    def add_request(
        self,
        prompt: str | list[int],
        params: SamplingParams | None = None,
        request_id: str | None = None,
        on_output: OutputCallback | None = None,
    ) -> str:
        """Queue a request; it joins the running batch at a coming step. Thread-safe.

        Args:
            prompt: text (tokenized as is, no chat template) or prompt token ids.
            params: sampling parameters; default ``SamplingParams()`` (greedy, 16 tokens).
            request_id: your id; default "req-<n>".
            on_output: called (in the thread running ``step``) with each :class:`RequestOutput`.

        Returns:
            The request id.

        Raises:
            UsageError: empty prompt, or ``prompt tokens + max_tokens > max_model_len``; a
                ``response_format`` that fails its checks (``grammar.SchemaError``). Its grammar
                compiles in the background: a schema xgrammar refuses, or one not compiled within
                the time budget (``grammar.GrammarTimeout``), ends the request alone, its
                callback getting that UsageError instead of an output.
        """
        seq = self._make_sequence(prompt, params or SamplingParams(), request_id)
        if on_output is not None:
            self._callbacks[seq.request_id] = on_output
        self._inbox.put(("add", seq))
        self._wakeup.set()
        return seq.request_id

    def abort_request(self, request_id: str) -> None:
        """Stop a request at the next step (its last output has finish_reason "abort"). Thread-safe."""
        self._inbox.put(("abort", request_id))
        self._wakeup.set()

    def has_unfinished(self) -> bool:
        return bool(self._live) or not self._inbox.empty()

    def check_fits(self, num_prompt_tokens: int, max_tokens: int) -> None:
        """Raise UsageError unless a request of this size fits the context window and the cache."""
        total = num_prompt_tokens + max_tokens
        if total > self.max_model_len:
            raise UsageError(
                f"prompt ({num_prompt_tokens} tokens) + max_tokens ({max_tokens}) = {total} exceeds "
                f"the model's context window of {self.max_model_len} tokens"
            )
        if self.block_manager.blocks_needed(total) > self.block_manager.num_blocks:
            raise UsageError(
                f"a request of {total} tokens needs more KV-cache blocks than the cache holds "
                f"({self.block_manager.num_blocks} x {self.block_manager.block_size}); raise kv_cache_gb"
            )

    # ---- the step loop --------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        """Run one scheduling + forward step; returns one output per sequence that ran. With
        nothing to run but sequences waiting for their grammar, it waits (up to 1 s) for a
        compile to end, a request or an abort, instead of spinning."""
        self._wakeup.clear()
        outputs = self._drain_inbox()
        self._admit_compiled()
        batch = self.scheduler.schedule()
        if batch.is_empty:
            self._deliver(outputs)
            if self._compiling and not outputs:
                self._wait_for_grammars()
            return outputs
        t0 = time.perf_counter()
        tokens = self.runner.run(batch)
        self.stats["busy_s"] += time.perf_counter() - t0
        self.stats["steps"] += 1
        self.stats["decode_tokens"] += len(batch.decode)
        self.stats["prefill_tokens"] += batch.num_tokens - len(batch.decode)
        self.stats["preemptions"] = self.scheduler.num_preemptions
        self.stats.update(self.block_manager.stats)
        for seq, tok in zip(self.scheduler.advance(batch), tokens):
            try:
                if isinstance(tok, Exception):
                    raise tok
                outputs.append(append_token(seq, tok, self.eos_token_ids, self.max_model_len))
            except Exception as exc:  # noqa: BLE001 - one sequence's failure is its own
                self._fail_sequence(seq, exc)
                continue
            if seq.is_finished:
                self.scheduler.finish(seq, seq.finish_reason)
                self._live.pop(seq.request_id, None)
        self._deliver(outputs)
        return outputs

    def generate(
        self,
        prompts: SequenceABC[str | list[int]],
        params: SamplingParams | SequenceABC[SamplingParams] | None = None,
    ) -> list[GenerationResult]:
        """Generate for all ``prompts`` (text or token ids) together; results in input order.

        ``params`` is one SamplingParams for all prompts or one per prompt.
        """
        if params is None or isinstance(params, SamplingParams):
            params = [params or SamplingParams()] * len(prompts)
        if len(params) != len(prompts):
            raise UsageError(f"got {len(prompts)} prompts but {len(params)} SamplingParams")
        for sp in params:  # a schema that cannot compile raises here, as the others' do
            self.grammars.compile(sp.response_format)
        seqs = [self._make_sequence(p, sp, None) for p, sp in zip(prompts, params)]
        for seq in seqs:
            self._inbox.put(("add", seq))
        while any(not s.is_finished for s in seqs):
            self.step()
        return [make_result(s) for s in seqs]

    def stream(self, prompt: str | list[int], params: SamplingParams | None = None) -> Iterator[RequestOutput]:
        """Add one request and step the engine until it finishes, yielding its outputs.

        Other requests in flight advance too (their outputs go to their callbacks). For a
        server, run :class:`parainfer.generation.loop.EngineLoop` instead.
        """
        mine: list[RequestOutput] = []
        rid = self.add_request(prompt, params, on_output=mine.append)
        done = False
        try:
            while not done:
                self.step()
                done = bool(mine) and mine[-1].finished
                yield from mine
                mine.clear()
        finally:
            if not done:  # the caller stopped iterating early
                self.abort_request(rid)

    def fail_all(self, exc: BaseException) -> None:
        """Drop every request and hand ``exc`` (instead of an output) to each callback."""
        for seq in list(self._live.values()):
            self.scheduler.finish(seq, "abort")
        self._live.clear()
        for seq in self._compiling:
            self.grammars.give_up(seq.grammar_ticket, timed_out=False)
        self._compiling.clear()
        callbacks, self._callbacks = self._callbacks, {}
        for rid, cb in callbacks.items():
            try:
                cb(exc)  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001 - the others must still hear of it
                log.exception("output callback of request %s failed", rid)

    # ---- internals ------------------------------------------------------------------------

    def _make_sequence(self, prompt: str | list[int], params: SamplingParams, request_id: str | None) -> Sequence:
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt)
        else:
            ids = [int(t) for t in prompt]
        if not ids:
            raise UsageError("prompt is empty; give some text or at least one token id")
        self.check_fits(len(ids), params.max_tokens)
        rid = request_id if request_id is not None else f"req-{next(self._ids)}"
        if rid in self._live:
            raise UsageError(f"request id {rid!r} is already running; ids must be unique")
        detok = IncrementalDetokenizer(self.tokenizer, ids, params.stop)
        seq = Sequence(rid, ids, params, detok, prompt if isinstance(prompt, str) else None)
        ticket = self.grammars.submit(params.response_format, again=True)  # None unless structured output
        if ticket is not None and ticket.future.done():
            seq.grammar = GrammarState(ticket.future.result(), self.grammars.vocab_size)  # raises its error
        elif ticket is not None:
            seq.grammar_ticket = ticket
            ticket.future.add_done_callback(lambda _: self._wakeup.set())
        return seq

    def _drain_inbox(self) -> list[RequestOutput]:
        aborted = []
        while not self._inbox.empty():
            kind, item = self._inbox.get()
            if kind == "add":
                self._live[item.request_id] = item
                if item.grammar_ticket is not None:
                    self._compiling.append(item)
                else:
                    self.scheduler.add(item)
            elif item in self._live:
                seq = self._live.pop(item)
                if seq in self._compiling:
                    self._compiling.remove(seq)
                    self.grammars.give_up(seq.grammar_ticket, timed_out=False)
                self.scheduler.finish(seq, "abort")
                aborted.append(make_output(seq, []))
        return aborted

    def _admit_compiled(self) -> None:
        """Sequences whose grammar compiled join the scheduler; one whose compile failed, or
        whose time budget passed, fails alone."""
        now = time.monotonic()
        for seq in list(self._compiling):
            ticket = seq.grammar_ticket
            if not ticket.future.done() and now < ticket.deadline:
                continue
            self._compiling.remove(seq)
            seq.grammar_ticket = None
            if not ticket.future.done():
                self._fail_sequence(seq, self.grammars.give_up(ticket))
                continue
            try:
                seq.grammar = GrammarState(ticket.future.result(), self.grammars.vocab_size)
            except Exception as exc:  # noqa: BLE001 - a schema xgrammar refused: this request's alone
                self._fail_sequence(seq, exc)
                continue
            self.scheduler.add(seq)

    def _wait_for_grammars(self) -> None:
        """Sleep until a compile ends, a request comes or goes, or the nearest deadline (<= 1 s)."""
        nearest = min(seq.grammar_ticket.deadline for seq in self._compiling)
        self._wakeup.wait(min(1.0, max(0.0, nearest - time.monotonic())))

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        deliver_outputs(self._callbacks, outputs, self.abort_request)

    def _fail_sequence(self, seq: Sequence, exc: Exception) -> None:
        """End ``seq`` alone (finish reason "error"), free its blocks, hand ``exc`` to its callback."""
        level = logging.WARNING if isinstance(exc, UsageError) else logging.ERROR  # a bad schema is the caller's
        log.log(level, "request %s failed in the engine: %s: %s", seq.request_id, type(exc).__name__, exc)
        self.scheduler.finish(seq, "error")
        self._live.pop(seq.request_id, None)
        cb = self._callbacks.pop(seq.request_id, None)
        if cb is not None:
            try:
                cb(exc)  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001
                log.exception("output callback of request %s failed", seq.request_id)

