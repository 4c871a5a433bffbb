"""Logprobs in OpenAI's two shapes, from the engine's :class:`~parainfer.generation.outputs.TokenLogprob`.

``chat_logprobs`` builds a chat choice's ``{"content": [{token, logprob, bytes, top_logprobs}]}``,
``completion_logprobs`` a completion's ``{tokens, token_logprobs, top_logprobs, text_offset}``;
``token_text`` is a token's text (``tokenizer.decode([id])``). Values are natural logs of the
model's raw distribution (see ``SamplingParams.logprobs``). The shapes, with examples:
docs/generation.md, "Structured output (JSON schema) and logprobs" ("Logprobs in OpenAI's shapes").
"""

from __future__ import annotations

from typing import Any, Sequence


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

