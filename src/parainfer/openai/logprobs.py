"""Logprobs in OpenAI's two shapes, from the engine's :class:`~parainfer.generation.outputs.TokenLogprob`.

Chat (``logprobs: true``, ``top_logprobs: k``)::

    {"content": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105],
                  "top_logprobs": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105]}, ...]}, ...]}

Completions (``logprobs: k``)::

    {"tokens": ["Hi", ...], "token_logprobs": [-0.1, ...], "top_logprobs": [{"Hi": -0.1, ...}, ...],
     "text_offset": [0, ...]}

A token's text is ``tokenizer.decode([id])`` (a piece of a multi-byte character decodes to
U+FFFD, as in vLLM); ``bytes`` are that text's UTF-8 bytes. Values are natural logs of the
model's raw distribution (see ``SamplingParams.logprobs``).
"""

from __future__ import annotations

from typing import Any, Sequence

from parainfer.serving.http.errors import ApiError


def token_text(tokenizer: Any, token_id: int) -> str:
    """The text of one token (special tokens included, e.g. "<|im_end|>")."""
    return tokenizer.decode([token_id])


def chat_logprobs(tokenizer: Any, entries: Sequence[Any]) -> dict[str, Any]:
    """The ``logprobs`` object of a chat choice (or of one stream chunk) for ``entries``."""
    def item(token_id: int, logprob: float) -> dict[str, Any]:
        text = token_text(tokenizer, token_id)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}
    return {"content": [{**item(e.token_id, e.logprob), "top_logprobs": [item(t, lp) for t, lp in e.top]}
                        for e in entries]}


def completion_logprobs(tokenizer: Any, entries: Sequence[Any], offset: int = 0) -> dict[str, Any]:
    """The ``logprobs`` object of a completion choice (or stream chunk); ``offset`` is the
    character offset of the first token in the completion text (streams continue it)."""
    tokens = [token_text(tokenizer, e.token_id) for e in entries]
    offsets = []
    for text in tokens:
        offsets.append(offset)
        offset += len(text)
    return {"tokens": tokens, "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [{token_text(tokenizer, t): lp for t, lp in e.top} for e in entries],
            "text_offset": offsets}


def requested_top_logprobs(body: Any, chat: bool, limit: int) -> int | None:
    """How many top logprobs the request asks for (None: no logprobs).

    Chat: ``logprobs`` is a boolean and ``top_logprobs`` 0..limit (needs ``logprobs: true``);
    completions: ``logprobs`` is an integer 0..limit.

    Raises:
        ApiError: 400 naming the field and what is accepted.
    """
    value = body.logprobs
    if chat:
        top = getattr(body, "top_logprobs", None)
        if value not in (None, True, False):
            raise ApiError(400, f"logprobs must be true or false in a chat completion, got {value!r}",
                           param="logprobs", code="invalid_logprobs")
        if top is not None and not value:
            raise ApiError(400, "top_logprobs needs logprobs: true", param="top_logprobs", code="invalid_logprobs")
        if top is not None and (isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= limit):
            raise ApiError(400, f"top_logprobs must be an integer in 0..{limit}, got {top!r}",
                           param="top_logprobs", code="invalid_logprobs")
        return (top or 0) if value else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise ApiError(400, f"logprobs must be an integer in 0..{limit} in a completion, got {value!r}",
                       param="logprobs", code="invalid_logprobs")
    return value
