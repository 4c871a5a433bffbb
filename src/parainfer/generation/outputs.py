"""What the engine hands back: per-step increments and whole-request results."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TokenLogprob:
    """One generated token's log-probability (natural log, from the model's raw logits).

    Attributes:
        token_id: the generated token.
        logprob: its log-probability.
        top: the k most likely tokens as ``(token_id, logprob)``, most likely first (k is
            ``SamplingParams.logprobs``; empty for 0).
    """

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class RequestOutput:
    """One request's progress in one engine step (what a streaming server forwards).

    Attributes:
        request_id: the id ``add_request`` returned.
        new_token_ids: tokens generated this step (one per step today).
        new_text: text that became final this step; may be "" (a partial UTF-8 character, or
            characters held back because they could start a stop string). The concatenation
            of all ``new_text`` of a request equals its final text.
        finished: True on the request's last output.
        finish_reason: "stop" (EOS or stop string), "length" (max_tokens or context window),
            "abort" (``abort_request``); None while running.
        prompt_tokens: prompt length in tokens.
        completion_tokens: tokens generated so far.
        new_logprobs: one :class:`TokenLogprob` per new token when the request asked for
            logprobs, else None.
    """

    request_id: str
    new_token_ids: list[int]
    new_text: str
    finished: bool
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    new_logprobs: list[TokenLogprob] | None = None


@dataclass
class GenerationResult:
    """A finished request, as returned by ``LLMEngine.generate`` (in input order).

    Attributes:
        request_id: the request's id.
        text: the generated text (special tokens skipped, cut before a stop string).
        token_ids: generated token ids; includes the EOS token when EOS ended the request
            (as Hugging Face ``generate`` does).
        prompt_tokens: prompt length in tokens.
        completion_tokens: ``len(token_ids)``.
        finish_reason: "stop" or "length" (or "abort").
        num_preemptions: times the request was preempted and recomputed.
        logprobs: one :class:`TokenLogprob` per generated token when the request asked for
            logprobs, else None.
    """

    request_id: str
    text: str
    token_ids: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    num_preemptions: int = 0
    logprobs: list[TokenLogprob] | None = None
