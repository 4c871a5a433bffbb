"""Incremental detokenization and stop strings for one request.

Only a short window of tokens is decoded at each step (the prefix/read offset scheme of Hugging
Face TGI and vLLM; decoding the whole output each step costs O(n^2)): the new text is what
decoding ``[prefix_offset:]`` adds beyond ``[prefix_offset:read_offset]``. A window ending
inside a multi-byte character (U+FFFD) is held until the next token completes it; the window
starts a few prompt tokens back so the first output token decodes with its leading space. Stop
strings: the text is cut before the first match; while the request runs the last
``max(len(stop)) - 1`` characters are held back from streaming, so a client never sees the
beginning of a stop string that is then removed.
"""

from __future__ import annotations

from typing import Any

_PROMPT_CONTEXT = 6  # prompt tokens decoded with the output for correct leading spaces


class IncrementalDetokenizer:
    """Turns one request's output token ids into text, chunk by chunk.

    Attributes:
        text: the output text so far (cut before a stop string once one matched).
        stopped_by: the stop string that matched, else None.
    """

    def __init__(self, tokenizer: Any, prompt_token_ids: list[int], stop: list[str]) -> None:
        self._tok = tokenizer
        context = list(prompt_token_ids[-_PROMPT_CONTEXT:])
        self._ids = context
        self._prefix_offset = 0
        self._read_offset = len(context)
        self._stop = list(stop)
        self._holdback = max((len(s) for s in self._stop), default=1) - 1
        self._emitted = 0
        self.text = ""
        self.stopped_by: str | None = None

    def add_token(self, token_id: int) -> bool:
        """Append one generated token; returns True when a stop string now appears in the text."""
        if self.stopped_by is not None:
            return True
        self._ids.append(token_id)
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        if len(full) <= len(prefix) or full.endswith("\ufffd"):
            return False
        old_len = len(self.text)
        self.text += full[len(prefix) :]
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        return self._check_stop(old_len)

    def pop_delta(self, finished: bool) -> str:
        """Text not yet handed out; holds back a possible stop-string prefix unless ``finished``."""
        end = len(self.text) if finished else max(self._emitted, len(self.text) - self._holdback)
        delta = self.text[self._emitted : end]
        self._emitted = end
        return delta

    def _check_stop(self, old_len: int) -> bool:
        best: tuple[int, str] | None = None
        for s in self._stop:
            idx = self.text.find(s, max(0, old_len - len(s) + 1))
            if idx >= 0 and (best is None or idx < best[0]):
                best = (idx, s)
        if best is None:
            return False
        self.text = self.text[: best[0]]
        self.stopped_by = best[1]
        return True

    def _decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
