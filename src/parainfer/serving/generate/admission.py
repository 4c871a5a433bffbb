"""Admission of generation requests: counts, character budgets, the queue reservation, then
tokenising and the context-window check in the CPU thread (``GenerationService`` mixes it in).

Order (cheapest first, nothing is tokenised before the reservation is held): 413 more prompts
than ``--max-queue`` could ever hold; 400 a prompt over its character budget
(``limits.check_prompt_chars``); 429 no room now, with ``Retry-After``; then, off the event
loop: 400 a lone surrogate, an empty prompt, token ids outside the vocabulary, or prompt +
``max_tokens`` over the context window; 413/400 a ``response_format`` whose schema fails its
checks (``generation.schema_check``), after which its compile starts in the engine's compile
threads and the request awaits it (400 xgrammar refused it, 408 not compiled within the
budget) while the engine steps the others. A failure after the reservation releases it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

from parainfer.errors import UsageError
from parainfer.openai.errors import ApiError
from parainfer.openai.requests import (
    check_prompts_fit,
    expand_choices,
    grammar_error,
    sampling_params,
    start_grammar,
)
from parainfer.serving.http.limits import check_count, check_prompt_chars, check_text

log = logging.getLogger(__name__)


class Reservation:
    """Room for ``count`` sequences, held from admission until the request ends; ``release``
    is idempotent (a stream that never started releases it when its response closes)."""

    def __init__(self, service: Admission, count: int) -> None:
        self.service, self.count, self.released = service, count, False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.service._set_running(self.service.running - self.count)


@dataclass
class Admitted:
    """A request past admission: one sequence per choice (``n`` per prompt, choice ``p * n + i``:
    ``requests.expand_choices``), each with its prompt ids and SamplingParams, and the
    reservation (room for every sequence)."""

    prompts: list[list[int]]
    params: list[Any]
    reservation: Reservation
    n: int = 1


class Admission:
    """The admission half of ``GenerationService`` (a mixin: it uses the service's ``config``,
    ``running``, ``_done_times``, ``_cpu`` executor and ``_engine()``)."""

    config: Any
    running: int
    _done_times: list[float]
    _cpu: Any
    metrics: Any

    def _engine(self) -> Any:
        raise NotImplementedError

    async def admit_completion(self, body: Any) -> Admitted:
        """Admit a /v1/completions body (see the module docstring for the order of checks)."""
        engine = self._engine()
        prompt = body.prompt
        prompt = [prompt] if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)) else prompt
        self._check_count(len(prompt) * body.n)
        for i, p in enumerate(prompt):
            if isinstance(p, str):
                check_prompt_chars(len(p), engine.max_model_len, f"prompt.{i}" if len(prompt) > 1 else "prompt")
        return await self._admit(len(prompt), lambda: self.prompts_from_completion(prompt), body)

    async def admit_chat(self, body: Any, messages: list[dict[str, Any]]) -> Admitted:
        """Admit a /v1/chat/completions body with its ``messages`` as plain dicts (its ``tools``
        go to the chat template)."""
        engine = self._engine()
        check_prompt_chars(sum(len(m["content"]) for m in messages), engine.max_model_len, "messages")
        return await self._admit(1, lambda: [self.prompt_from_chat(messages, body.tools)], body)

    async def _admit(self, count: int, tokenize: Callable[[], list[list[int]]], body: Any) -> Admitted:
        reservation = self.reserve(count * body.n)
        try:
            prompts, params, grammar = await asyncio.get_running_loop().run_in_executor(
                self._cpu, lambda: self._prepare(tokenize, body))
            if grammar is not None:
                try:
                    await grammar.owner.wait(grammar)
                except UsageError as exc:
                    raise grammar_error(exc) from None
        except BaseException:
            reservation.release()
            raise
        prompts, per_choice = expand_choices(prompts, params, body.n)
        return Admitted(prompts, per_choice, reservation, body.n)

    def _prepare(self, tokenize: Callable[[], list[list[int]]], body: Any) -> tuple[list[list[int]], Any, Any]:
        """Tokenise, build the SamplingParams, check every prompt fits and the output format's
        schema (``response_format`` or a forced tool call), and start its compile (the CPU
        thread); returns the compile's ticket too."""
        prompts = tokenize()
        engine = self._engine()
        params = sampling_params(engine, body, prompts, compile_grammar=False)
        self._check_fits(prompts, params)
        return prompts, params, start_grammar(engine, params.response_format)

    def _check_count(self, count: int) -> None:
        limit = min(self.config.max_inputs_per_request, self.config.max_queue)
        check_count(count, limit, "prompts", "--max-inputs-per-request / --max-queue")

    def reserve(self, count: int) -> Reservation:
        """Take room for ``count`` sequences now (release it with ``Reservation.release``).

        Raises:
            ApiError: 413 more than ``--max-queue`` could ever hold, 429 no room now (Retry-After).
        """
        self._check_count(count)
        limit = self.config.max_queue
        if self.running + count > limit:
            retry = self._retry_after_s(self.running + count - limit)
            raise ApiError(429, f"server busy: {self.running} sequences admitted, at most {limit} "
                                f"(--max-queue); retry after {retry}s", code="queue_full",
                           headers={"Retry-After": str(retry)})
        self._set_running(self.running + count)
        return Reservation(self, count)

    def _set_running(self, value: int) -> None:
        self.running = value
        self.metrics.sequences_running.set(value)

    def prompts_from_completion(self, prompt: str | list[str] | list[int] | list[list[int]]) -> list[list[int]]:
        """Token ids per prompt: text is tokenized as is (no chat template), ids pass through."""
        engine = self._engine()
        if isinstance(prompt, str):
            prompt = [prompt]
        if prompt and isinstance(prompt[0], int):
            prompt = [prompt]  # type: ignore[list-item]
        vocab = len(engine.tokenizer)
        prompts = []
        for i, p in enumerate(prompt):
            if isinstance(p, str):
                check_text(p, f"prompt.{i}")
            ids = engine.tokenizer.encode(p) if isinstance(p, str) else [int(t) for t in p]
            if not ids:
                raise ApiError(400, f"prompt {i} is empty; give some text", param="prompt", code="empty_prompt")
            # over the window: _check_fits refuses it, naming its length; its ids need no look
            if len(ids) <= engine.max_model_len and not all(0 <= t < vocab for t in ids):
                raise ApiError(400, f"prompt {i} has token ids outside [0, {vocab})", param="prompt",
                               code="invalid_token")
            prompts.append(ids)
        return prompts

    def prompt_from_chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
                         ) -> list[int]:
        """Token ids of ``messages`` with the model's chat template (given ``tools``) and the
        assistant prompt."""
        for i, m in enumerate(messages):
            check_text(m["content"], f"messages.{i}.content")
        try:
            return self._engine().format_chat(messages, tools)
        except ApiError:
            raise
        except Exception as exc:  # a template that rejects the roles/order given
            from jinja2 import TemplateError

            reason = f": {exc}" if isinstance(exc, TemplateError) else " (see the server log)"
            log.warning("chat template rejected the messages: %s: %s", type(exc).__name__, exc)
            raise ApiError(400, f"the model's chat template rejected the messages{reason}", param="messages",
                           code="invalid_messages") from None

    def admit(self, prompts: list[list[int]], params: Any) -> None:
        """Raise ApiError unless every prompt fits (400, naming prompt and max_tokens) and there
        is room for ``len(prompts)`` more sequences (413 never, 429 not now; reserves nothing:
        routes use ``admit_completion``/``admit_chat``, which do)."""
        self._check_fits(prompts, params)
        self._check_count(len(prompts))
        if self.running + len(prompts) > self.config.max_queue:
            self.reserve(len(prompts)).release()  # raises the 429

    def _check_fits(self, prompts: list[list[int]], params: Any) -> None:
        check_prompts_fit(self._engine(), prompts, params.max_tokens)

    def _retry_after_s(self, excess: int) -> int:
        now = time.monotonic()
        recent = [t for t in self._done_times if now - t < 10.0]
        rate = len(recent) / (now - recent[0]) if len(recent) > 1 and now > recent[0] else 0.0
        return max(1, min(60, math.ceil(excess / rate))) if rate > 0 else 1

    def _take(self, count: int) -> Reservation:
        """Room for ``count`` sequences without a capacity check (admission was done before)."""
        self._set_running(self.running + count)
        return Reservation(self, count)

