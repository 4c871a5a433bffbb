"""What the server needs of a generation engine that runs in other processes: its tokenizer and
its limits (the context window and one replica's KV-cache size), for admission and /health.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from parainfer.errors import UsageError
from parainfer.generation.grammar import GrammarCompiler


class EngineView:
    """The parts of an ``LLMEngine`` the server's admission and /health read, for engines that
    live in workers: ``name`` (the engine's), ``tokenizer``, ``max_model_len``, ``config`` (max_num_seqs, dtype,
    num_blocks, block_size of one replica), ``grammars`` (to reject a response_format the
    replicas could not compile, at admission), ``stats``, ``format_chat``, ``check_fits``, and
    ``batch_invariance`` (the first replica's load-time probe: ``LLMEngine.batch_invariance``)."""

    def __init__(self, tokenizer: Any, info: dict[str, Any], router: Any) -> None:
        self.tokenizer, self.router = tokenizer, router
        self.name = info.get("engine", "parainfer")
        self.max_model_len = int(info["max_model_len"])
        if self.name == "parainfer":
            self.grammars = GrammarCompiler(tokenizer, int(info["vocab_size"]), set(info["eos_token_ids"]),
                                            info.get("grammar"))
        else:  # the other engines have no structured output: refused at admission
            from parainfer.generation.engine_contract import NoGrammars

            self.grammars = NoGrammars(tokenizer, int(info["vocab_size"]), set(info["eos_token_ids"]), self.name)
        self.grammars.warm_up()
        self.batch_invariance = dict(info.get("batch_invariance") or {
            "deterministic": False, "mode": "unknown", "reason": "the replica did not report its probe"})
        self.config = SimpleNamespace(**{k: info[k] for k in ("max_num_seqs", "dtype", "num_blocks", "block_size")})

    @property
    def stats(self) -> dict[str, Any]:
        """The replicas' engine counters summed (``LLMEngine.stats`` keys: prefill and prefix-cache
        tokens, steps, ...), as each replica last sent them, plus ``requests_routed`` per replica."""
        total: dict[str, Any] = {}
        for rep in self.router.replicas:
            for key, value in rep.stats.items():
                if isinstance(value, (int, float)):
                    total[key] = total.get(key, 0) + value
        return {**total, "requests_routed": [r.routed for r in self.router.replicas]}

    def format_chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> list[int]:
        """Prompt token ids of chat ``messages`` (as ``LLMEngine.format_chat``)."""
        from parainfer.generation.engine import chat_prompt_ids

        return chat_prompt_ids(self.tokenizer, messages, tools)

    def check_fits(self, num_prompt_tokens: int, max_tokens: int) -> None:
        """Raise UsageError unless the request fits one replica's window and KV cache."""
        total, cfg = num_prompt_tokens + max_tokens, self.config
        if total > self.max_model_len:
            raise UsageError(f"prompt ({num_prompt_tokens} tokens) + max_tokens ({max_tokens}) = {total} exceeds "
                             f"the model's context window of {self.max_model_len} tokens")
        if -(-total // cfg.block_size) > cfg.num_blocks:
            raise UsageError(f"a request of {total} tokens needs more KV-cache blocks than the cache holds "
                             f"({cfg.num_blocks} x {cfg.block_size}); raise kv_cache_gb")

    def fail_all(self, exc: BaseException) -> None:
        self.router.fail_all(exc)
