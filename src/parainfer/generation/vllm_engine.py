"""``--engine vllm``: vLLM's ``LLMEngine`` behind parainfer's engine contract (GPU machines).

UNTESTED until run on a GPU machine with vLLM installed: vLLM is not installable on the CPU
machines parainfer is developed on. What is tested there is the contract itself (a fake engine in
``tests/generation/contract_engine.py`` runs through the replica host and the server). The adapter
posts ``add_request``/``abort_request`` to an inbox that ``step`` drains (vLLM's engine is not
thread-safe), steps vLLM once per ``step`` and turns vLLM's cumulative outputs into per-step
``RequestOutput`` increments. Structured output and logprobs are refused with a one-line error.
"""

from __future__ import annotations

import itertools
import queue
import time
from collections.abc import Sequence as SequenceABC
from pathlib import Path
from typing import Any

from parainfer.errors import UsageError
from parainfer.generation.engine_config import EngineConfig
from parainfer.generation.engine_contract import VLLM_HINT, NoGrammars, OutputCallback, deliver_outputs
from parainfer.generation.outputs import GenerationResult, RequestOutput
from parainfer.generation.sampling_params import SamplingParams



class VllmEngine:
    """vLLM's engine under the ``engine_contract.GenerationEngine`` calls.

    Args:
        model: a Hugging Face model directory (or hub name, where the machine may download).
        config: engine settings; keyword arguments override its fields. Used: ``dtype``,
            ``max_num_seqs``, ``max_model_len``, ``enable_prefix_caching``.

    Raises:
        UsageError: vLLM is not installed; ``deterministic`` asked for.
    """

    name = "vllm"

    def __init__(self, model: str | Path, config: EngineConfig | None = None, **overrides: Any) -> None:
        cfg = (config or EngineConfig()).replace(**overrides)
        if cfg.deterministic:
            raise UsageError("--deterministic is not supported by --engine vllm; accepted: --engine parainfer")
        try:
            import vllm
        except ImportError:
            raise UsageError(VLLM_HINT) from None
        self._vllm = vllm
        args = vllm.EngineArgs(model=str(model), dtype=cfg.dtype, max_num_seqs=cfg.max_num_seqs,
                               max_model_len=cfg.max_model_len, enable_prefix_caching=cfg.enable_prefix_caching)
        self._engine = vllm.LLMEngine.from_engine_args(args)
        self.tokenizer = self._engine.get_tokenizer()
        self.max_model_len = int(self._engine.model_config.max_model_len)
        cache = self._engine.cache_config
        self.config = cfg.replace(block_size=int(cache.block_size),
                                  num_blocks=int(getattr(cache, "num_gpu_blocks", None) or 1))
        eos = {int(self.tokenizer.eos_token_id)} if self.tokenizer.eos_token_id is not None else set()
        self.grammars = NoGrammars(self.tokenizer, len(self.tokenizer), eos, self.name)
        self.batch_invariance = {"deterministic": False, "mode": "vllm", "reason": "not checked for vLLM"}
        self.stats: dict[str, Any] = {"steps": 0, "prefill_tokens": 0, "decode_tokens": 0, "preemptions": 0,
                                      "busy_s": 0.0}
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._callbacks: dict[str, OutputCallback] = {}
        self._seen: dict[str, tuple[int, int]] = {}  # request id -> (tokens, characters) handed out
        self._prompt_len: dict[str, int] = {}
        self._ids = itertools.count()

    def format_chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> list[int]:
        """Prompt token ids of chat ``messages`` (the tokenizer's chat template, ``tools`` passed on)."""
        from parainfer.generation.engine import chat_prompt_ids

        return chat_prompt_ids(self.tokenizer, messages, tools)

    def check_fits(self, num_prompt_tokens: int, max_tokens: int) -> None:
        """Raise UsageError unless prompt + max_tokens fits the context window."""
        total = num_prompt_tokens + max_tokens
        if total > self.max_model_len:
            raise UsageError(f"prompt ({num_prompt_tokens} tokens) + max_tokens ({max_tokens}) = {total} exceeds "
                             f"the model's context window of {self.max_model_len} tokens")

    def add_request(self, prompt: str | list[int], params: SamplingParams | None = None,
                    request_id: str | None = None, on_output: OutputCallback | None = None) -> str:
        """Queue a request (thread-safe); see ``engine_contract.GenerationEngine.add_request``."""
        params = params or SamplingParams()
        if params.response_format is not None or params.logprobs is not None:
            raise UsageError("response_format and logprobs are not supported by --engine vllm in parainfer; "
                             "accepted: --engine parainfer")
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        if not ids:
            raise UsageError("prompt is empty; give some text or at least one token id")
        self.check_fits(len(ids), params.max_tokens)
        rid = request_id if request_id is not None else f"req-{next(self._ids)}"
        if on_output is not None:
            self._callbacks[rid] = on_output
        self._inbox.put(("add", rid, ids, params))
        return rid

    def abort_request(self, request_id: str) -> None:
        """Stop a request at the next step (thread-safe)."""
        self._inbox.put(("abort", request_id, None, None))

    def has_unfinished(self) -> bool:
        return bool(self._seen) or not self._inbox.empty() or self._engine.has_unfinished_requests()

    def step(self) -> list[RequestOutput]:
        """Add and abort what came in, run one vLLM step, deliver the increments."""
        outputs = self._drain_inbox()
        t0 = time.perf_counter()
        results = self._engine.step() if self._engine.has_unfinished_requests() else []
        self.stats["busy_s"] += time.perf_counter() - t0
        self.stats["steps"] += bool(results)
        for res in results:
            out = self._increment(res)
            if out is not None:
                outputs.append(out)
        self._deliver(outputs)
        return outputs

    def generate(self, prompts: SequenceABC[str | list[int]],
                 params: SamplingParams | SequenceABC[SamplingParams] | None = None) -> list[GenerationResult]:
        """Run ``prompts`` together to the end; results in input order."""
        if params is None or isinstance(params, SamplingParams):
            params = [params or SamplingParams()] * len(prompts)
        collected: dict[str, list[RequestOutput]] = {}
        rids = []
        for p, sp in zip(prompts, params):
            rid = self.add_request(p, sp)
            collected[rid] = []
            self._callbacks[rid] = collected[rid].append
            rids.append(rid)
        while any(not (c and c[-1].finished) for c in collected.values()):
            self.step()
        results = []
        for rid in rids:
            outs = collected[rid]
            results.append(GenerationResult(rid, "".join(o.new_text for o in outs),
                                            [t for o in outs for t in o.new_token_ids], outs[-1].prompt_tokens,
                                            outs[-1].completion_tokens, outs[-1].finish_reason))
        return results

    def fail_all(self, exc: BaseException) -> None:
        """Abort every request in vLLM and hand ``exc`` to each callback."""
        if self._seen:
            self._engine.abort_request(list(self._seen))
        self._seen.clear()
        callbacks, self._callbacks = self._callbacks, {}
        for cb in callbacks.values():
            cb(exc)  # type: ignore[arg-type]

    def _drain_inbox(self) -> list[RequestOutput]:
        aborted = []
        while not self._inbox.empty():
            kind, rid, ids, params = self._inbox.get()
            if kind == "add":
                self._engine.add_request(rid, {"prompt_token_ids": ids}, self._sampling(params))
                self._seen[rid], self._prompt_len[rid] = (0, 0), len(ids)
            elif rid in self._seen:
                self._engine.abort_request([rid])
                done_tokens = self._seen.pop(rid)[0]
                aborted.append(RequestOutput(rid, [], "", True, "abort", self._prompt_len.pop(rid), done_tokens))
        return aborted

    def _sampling(self, params: SamplingParams) -> Any:
        return self._vllm.SamplingParams(
            n=1, temperature=0.0 if params.greedy else params.temperature, top_p=params.top_p,
            top_k=params.top_k if params.top_k > 0 else -1, seed=params.seed, stop=list(params.stop),
            max_tokens=params.max_tokens, ignore_eos=params.ignore_eos)

    def _increment(self, res: Any) -> RequestOutput | None:
        """vLLM's cumulative output of one request -> this step's RequestOutput."""
        rid = res.request_id
        if rid not in self._seen:
            return None
        done_tokens, done_chars = self._seen[rid]
        completion = res.outputs[0]
        new_ids = list(completion.token_ids[done_tokens:])
        self.stats["decode_tokens"] += len(new_ids)
        if done_tokens == 0:
            self.stats["prefill_tokens"] += self._prompt_len[rid]
        finished = bool(res.finished)
        text = completion.text[done_chars:]
        reason = (completion.finish_reason or "stop") if finished else None
        if finished:
            del self._seen[rid]
        else:
            self._seen[rid] = (len(completion.token_ids), len(completion.text))
        return RequestOutput(rid, new_ids, text, finished, reason,
                             self._prompt_len.pop(rid) if finished else self._prompt_len[rid],
                             len(completion.token_ids))

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        deliver_outputs(self._callbacks, outputs, self.abort_request)
