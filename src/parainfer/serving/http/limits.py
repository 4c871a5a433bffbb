"""Input limits checked before any tokenising, so that no single request can freeze the server.

The count of inputs (``check_count``: 413 ``too_many_inputs``), lone surrogates
(``check_text``: 400 ``invalid_text``) and each text's **character budget**, ``window x
CHARS_PER_TOKEN_BOUND`` characters (``char_budget``): embed/classify truncate a text to it
(``capped_texts``; the model truncates to the window anyway), generation refuses a prompt over
it with 400 (``check_prompt_chars``). The order of all checks and why the budget is safe:
docs/serving.md, "Limits, in the order they are checked".
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
