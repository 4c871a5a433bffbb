"""A small engine that implements ``generation.engine_contract.GenerationEngine`` and nothing more.

Served with ``--engine contract_engine:EchoEngine`` it shows that the replicas, the host, the
router, admission and the OpenAI routes use the contract alone (no LLMEngine internals). The
"model" echoes: a request's completion is its prompt's token ids again, then EOS, so greedy output
equals the prompt text. Tokens are bytes (ids 0-255), EOS 256; one token per request per step,
all running requests stepping together.
"""

from __future__ import annotations

import queue
import threading
from types import SimpleNamespace
from typing import Any

from parainfer.errors import UsageError
from parainfer.generation.engine_contract import NoGrammars
from parainfer.generation.outputs import GenerationResult, RequestOutput
from parainfer.generation.sampling_params import SamplingParams

EOS = 256


class ByteTokenizer:
    """UTF-8 bytes as token ids; chat: "role: content" lines then "assistant: "."""

    eos_token_id = EOS

    def __len__(self) -> int:
        return EOS + 1

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(text.encode("utf-8"))

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": self.encode(text)}

    def decode(self, ids: list[int], skip_special_tokens: bool = False, **_: Any) -> str:
        return bytes(t for t in ids if t < EOS).decode("utf-8", errors="replace")

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True,
                            tokenize: bool = True) -> list[int] | str:
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
        return self.encode(text) if tokenize else text


class EchoEngine:
    """The contract over an echoing "model" (see the module docstring).

    Args:
        model: ignored (there are no weights).
        settings: ``EngineConfig`` fields; ``max_num_seqs`` is used, the rest accepted.
    """

    name = "echo"
    max_model_len = 512

    def __init__(self, model: Any = None, **settings: Any) -> None:
        self.tokenizer = ByteTokenizer()
        self.config = SimpleNamespace(max_num_seqs=settings.get("max_num_seqs", 8), dtype="bytes",
                                      num_blocks=512, block_size=1)
        self.stats: dict[str, Any] = {"steps": 0, "prefill_tokens": 0, "decode_tokens": 0, "preemptions": 0,
                                      "busy_s": 0.0}
        self.batch_invariance = {"deterministic": True, "mode": "echo", "reason": "no arithmetic"}
        self.grammars = NoGrammars(self.tokenizer, EOS + 1, {EOS}, self.name)
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._running: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._n = 0

    @staticmethod
    def load_tokenizer(model: Any) -> ByteTokenizer:
        return ByteTokenizer()

    def format_chat(self, messages: list[dict[str, str]], tools: list[dict] | None = None) -> list[int]:
        return self.tokenizer.apply_chat_template(messages)  # type: ignore[return-value] - no tool syntax

    def check_fits(self, num_prompt_tokens: int, max_tokens: int) -> None:
        if num_prompt_tokens + max_tokens > self.max_model_len:
            raise UsageError(f"prompt ({num_prompt_tokens} tokens) + max_tokens ({max_tokens}) exceeds "
                             f"{self.max_model_len}")

    def add_request(self, prompt: str | list[int], params: SamplingParams | None = None,
                    request_id: str | None = None, on_output: Any = None) -> str:
        params = params or SamplingParams()
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise UsageError("prompt is empty")
        self.check_fits(len(ids), params.max_tokens)
        with self._lock:
            self._n += 1
            rid = request_id or f"echo-{self._n}"
        self._inbox.put(("add", rid, {"prompt": ids, "params": params, "out": [], "cb": on_output}))
        return rid

    def abort_request(self, request_id: str) -> None:
        self._inbox.put(("abort", request_id, None))

    def has_unfinished(self) -> bool:
        return bool(self._running) or not self._inbox.empty()

    def step(self) -> list[RequestOutput]:
        outputs: list[tuple[Any, RequestOutput]] = []
        while not self._inbox.empty():
            kind, rid, req = self._inbox.get()
            if kind == "add":
                self._running[rid] = req
                self.stats["prefill_tokens"] += len(req["prompt"])
            elif rid in self._running:
                req = self._running.pop(rid)
                outputs.append((req["cb"], RequestOutput(rid, [], "", True, "abort", len(req["prompt"]),
                                                         len(req["out"]))))
        for rid, req in list(self._running.items()):
            prompt, out, params = req["prompt"], req["out"], req["params"]
            token = prompt[len(out)] if len(out) < len(prompt) else EOS
            out.append(token)
            reason = "stop" if token == EOS else ("length" if len(out) >= params.max_tokens else None)
            if reason:
                del self._running[rid]
            text = self.tokenizer.decode([token])
            outputs.append((req["cb"], RequestOutput(rid, [token], text, reason is not None, reason, len(prompt),
                                                     len(out))))
        self.stats["steps"] += bool(outputs)
        self.stats["decode_tokens"] += len(outputs)
        for cb, out in outputs:
            if cb is not None:
                cb(out)
        return [out for _, out in outputs]

    def fail_all(self, exc: BaseException) -> None:
        running, self._running = self._running, {}
        for req in running.values():
            if req["cb"] is not None:
                req["cb"](exc)

    def generate(self, prompts: Any, params: Any = None) -> list[GenerationResult]:
        params = params if isinstance(params, list) else [params or SamplingParams()] * len(prompts)
        got: dict[str, list[RequestOutput]] = {}
        rids = [self.add_request(p, sp, on_output=lambda o: got.setdefault(o.request_id, []).append(o))
                for p, sp in zip(prompts, params)]
        while self.has_unfinished():
            self.step()
        return [GenerationResult(r, "".join(o.new_text for o in got[r]), [t for o in got[r] for t in o.new_token_ids],
                                 got[r][-1].prompt_tokens, got[r][-1].completion_tokens, got[r][-1].finish_reason)
                for r in rids]
