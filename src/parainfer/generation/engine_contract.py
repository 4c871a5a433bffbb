"""The generation engine contract: what the replicas, the host, the server and ``run --task
generate`` call on an engine, and nothing more.

:class:`~parainfer.generation.LLMEngine` (``--engine parainfer``) satisfies it, and so do the
adapters ``llamacpp_engine.LlamaCppEngine`` and ``vllm_engine.VllmEngine``;
``engines.build_engine`` builds one by name. Everything above (``EngineLoop``, ``EngineHost``,
the sequence router, admission, the OpenAI routes, the batch predictor, metrics) sees only this.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence as SequenceABC
from typing import Any, Protocol, runtime_checkable

from parainfer.generation.grammar import GrammarCompiler, SchemaError, response_format_kind
from parainfer.generation.outputs import GenerationResult, RequestOutput
from parainfer.generation.sampling_params import SamplingParams

#: The one-line errors of an engine whose package is missing.
LLAMACPP_HINT = ("--engine llamacpp needs llama-cpp-python: pip install 'parainfer[llamacpp]' "
                 "(it compiles llama.cpp; see docs/generation.md, \"Engines\")")
VLLM_HINT = "--engine vllm needs vLLM on a CUDA machine: pip install vllm (docs/generation.md, \"Engines\")"

#: Called, in the thread running ``step``, with each RequestOutput of a request, or with the
#: exception that ended it alone.
OutputCallback = Callable[[RequestOutput], None]

log = logging.getLogger("parainfer.generation.engine")


def deliver_outputs(callbacks: dict[str, OutputCallback], outputs: list[RequestOutput],
                    abort: Callable[[str], None]) -> None:
    """Hand each of a step's ``outputs`` to its request's callback in ``callbacks`` (dropped from
    it with the request's last output). A callback that raises loses its own request alone: it
    is logged, dropped, and the request aborted through ``abort(request_id)`` unless finished.
    Every engine's ``step`` delivers through this."""
    for out in outputs:
        cb = callbacks.get(out.request_id)
        if cb is None:
            continue
        if out.finished:
            del callbacks[out.request_id]
        try:
            cb(out)
        except Exception:  # noqa: BLE001 - a broken consumer loses its request, no one else's
            log.exception("output callback of request %s failed; aborting it", out.request_id)
            callbacks.pop(out.request_id, None)
            if not out.finished:
                abort(out.request_id)


@runtime_checkable
class GenerationEngine(Protocol):
    """A continuous-batching text generator stepped by one thread.

    Attributes:
        name: the engine's name ("parainfer" | "llamacpp" | "vllm"), reported by /health and
            the run report.
        tokenizer: the model's tokenizer, with the Hugging Face calls the server makes:
            ``encode(text) -> list[int]``, ``decode(ids) -> str``, ``len(tokenizer)`` (vocabulary
            size) and ``apply_chat_template(messages, add_generation_prompt=True, tokenize=True, tools=None)``.
        max_model_len: context window in tokens (prompt + max_tokens must fit).
        config: settings the server reports and admits against: ``max_num_seqs``, ``dtype``,
            ``num_blocks`` and ``block_size`` (the KV cache: ``num_blocks * block_size`` tokens).
        stats: counters (``steps``, ``prefill_tokens``, ``decode_tokens``, ``preemptions``,
            ``busy_s`` at least); numbers only, summed over replicas by /metrics.
        batch_invariance: ``{"deterministic": bool, "mode": str, "reason": str}``: whether greedy
            tokens are independent of the running batch.
        grammars: a ``grammar.GrammarCompiler`` (``submit``, ``compile``, ``warm_up``, ``stats``,
            ``settings``, ``vocab_size``, ``eos_ids``); one that refuses every response_format
            where the engine has no structured output.
    """

    name: str
    tokenizer: Any
    max_model_len: int
    config: Any
    stats: dict[str, Any]
    batch_invariance: dict[str, Any]
    grammars: Any

    def add_request(self, prompt: str | list[int], params: SamplingParams | None = None,
                    request_id: str | None = None, on_output: OutputCallback | None = None) -> str:
        """Queue a request (thread-safe); returns its id. Raises UsageError for one that cannot
        run (empty, too long for the window, an unsupported option)."""
        ...

    def abort_request(self, request_id: str) -> None:
        """Stop a request at the next step; its last output has finish_reason "abort" (thread-safe)."""
        ...

    def has_unfinished(self) -> bool:
        """True while requests are queued or running."""
        ...

    def step(self) -> list[RequestOutput]:
        """One scheduling + forward step (one thread at a time); returns this step's outputs,
        which also went to their callbacks."""
        ...

    def fail_all(self, exc: BaseException) -> None:
        """Drop every request, handing ``exc`` to each callback."""
        ...

    def check_fits(self, num_prompt_tokens: int, max_tokens: int) -> None:
        """Raise UsageError unless a request of this size fits the window and the cache."""
        ...

    def format_chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> list[int]:
        """Prompt token ids of chat ``messages`` with the model's template and generation prompt;
        ``tools`` (OpenAI function specs) go to the template (``engine.chat_prompt_ids``)."""
        ...

    def generate(self, prompts: SequenceABC[str | list[int]],
                 params: SamplingParams | SequenceABC[SamplingParams] | None = None) -> list[GenerationResult]:
        """Run ``prompts`` together to the end; results in input order."""
        ...


class NoGrammars(GrammarCompiler):
    """A grammar compiler that refuses every response_format (engines without structured output)."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos_ids: set[int], engine: str) -> None:
        super().__init__(tokenizer, vocab_size, eos_ids)
        self.engine = engine

    def submit(self, response_format: dict | None, again: bool = False) -> Any:
        """None for no response_format (or type "text"); raises SchemaError for any other."""
        if response_format_kind(response_format) == "text":
            return None
        raise SchemaError(f"response_format {response_format_kind(response_format)!r} is not supported by "
                          f"--engine {self.engine}; accepted: --engine parainfer")

    def warm_up(self) -> None:
        """Nothing to build."""
