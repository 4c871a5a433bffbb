"""Input limits checked before any tokenising, so that no single request can freeze the server.

Order of checks on every inference route: the body size (``BodyLimitMiddleware``), the count of
inputs (413 ``too_many_inputs``), the queue reservation (429 ``queue_full``), then, off the event
loop, each text's characters: a lone surrogate is 400 ``invalid_text`` (it cannot be encoded as
UTF-8, so no tokenizer can take it), and a text is capped at a **character budget** before it is
counted: ``window x CHARS_PER_TOKEN_BOUND`` characters.

The budget is tied to the model window. A model reads at most ``window`` tokens of a text, and
a token of natural text covers ~4 characters (BPE, WordPiece); 32 is a generous upper bound,
so the first ``window x 32`` characters hold every token the model will read. Embed/classify
truncate a text to its budget (the result is the same: the model truncates to the window
anyway); generation refuses a prompt over its budget with 400 (it cannot fit the context
window). This bounds the tokenizer's work per text to ``window x 32`` characters (8,192 for
MiniLM's 256 tokens, 262,144 for SmolLM2's 8,192) instead of the body size.
"""

from __future__ import annotations

from parainfer.openai.errors import ApiError

CHARS_PER_TOKEN_BOUND = 32  # generous: natural-text tokens average ~4 characters
NO_WINDOW_CHARS = 1 << 20  # budget for a model that declares no window (a python callable)


def char_budget(window: int | None) -> int:
    """Most characters of one text worth tokenising for a model of ``window`` tokens."""
    return window * CHARS_PER_TOKEN_BOUND if window else NO_WINDOW_CHARS


def check_count(count: int, limit: int, what: str, option: str) -> None:
    """413 when one request holds more than ``limit`` inputs: it could never be admitted, so
    "retry later" (429) would be wrong.

    Raises:
        ApiError: 413 ``too_many_inputs`` naming the count, the limit and the option setting it.
    """
    if count > limit:
        raise ApiError(413, f"{count} {what} in one request; at most {limit} are accepted ({option}); "
                            "split the list into several requests", param="input", code="too_many_inputs")


def check_text(text: str, param: str) -> None:
    """Raise 400 unless ``text`` is valid Unicode text (no lone surrogates such as ``\\ud800``).

    Raises:
        ApiError: 400 ``invalid_text`` naming the field and the character's position.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ApiError(400, f"{param} holds a lone surrogate {text[exc.start]!r} at character {exc.start}; "
                            "send valid UTF-8 text", param=param, code="invalid_text") from None


def capped_texts(texts: list[str], window: int | None, param: str = "input") -> list[str]:
    """Each text checked (``check_text``) and cut to ``char_budget(window)`` characters."""
    budget = char_budget(window)
    out = []
    for i, text in enumerate(texts):
        text = text[:budget]
        check_text(text, f"{param}.{i}")
        out.append(text)
    return out


def check_prompt_chars(length: int, window: int, param: str) -> None:
    """Raise 400 for a generation prompt of ``length`` characters over its character budget
    (it cannot fit the window, so it is not worth tokenising).

    Raises:
        ApiError: 400 ``context_length_exceeded`` naming the length and the budget.
    """
    budget = char_budget(window)
    if length > budget:
        raise ApiError(400, f"{param} has {length} characters; prompts over {budget} characters (the "
                            f"{window}-token context window x {CHARS_PER_TOKEN_BOUND}) cannot fit; shorten it",
                       param=param, code="context_length_exceeded")
