"""Response bodies of the inference endpoints, built in one place for every caller.

The online routes (``serving/generate/routes.py``, ``serving/app.py``) and the OpenAI batch
paths (``parainfer run`` on a batch file, ``/v1/batches``) all shape their answers here, so a
batch result's ``body`` is exactly what the matching online endpoint returns. The shapes are
OpenAI's (the response models in ``openai.protocol``): a chat completion, a text completion,
an embeddings list, each with ``usage``.
"""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from parainfer.openai.errors import ApiError


@dataclass
class Choice:
    """One prompt's finished sequence (online answers and batch-file lines alike)."""

    index: int
    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprobs: dict[str, Any] | None = None  # OpenAI's logprobs object, shaped by openai.logprobs
    token_logprobs: list[Any] | None = None  # the engine's TokenLogprobs, before shaping
    tool_calls: list[dict[str, Any]] | None = None  # a chat choice's tool call (``requests.apply_tool_calls``)


def completion_head(kind: str, model: str) -> dict[str, Any]:
    """``{id, object, created, model}`` of a new completion; ``kind`` is "chat" or "text"."""
    if kind == "chat":
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": model}
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": model}


def usage(choices: Sequence[Choice], n: int = 1) -> dict[str, int]:
    """OpenAI's completion usage: completion tokens summed over the choices, each prompt's tokens
    once (choices ``p * n .. p * n + n - 1`` share prompt ``p``)."""
    prompt = sum(c.prompt_tokens for c in choices if c.index % n == 0)
    completion = sum(c.completion_tokens for c in choices)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def chat_message(c: Choice) -> dict[str, Any]:
    """The assistant ``message`` of a chat choice: its text, or its tool calls (content null)."""
    if c.tool_calls:
        return {"role": "assistant", "content": None, "tool_calls": c.tool_calls}
    return {"role": "assistant", "content": c.text}


def chat_completion_body(head: dict[str, Any], choices: Sequence[Choice], n: int = 1) -> dict[str, Any]:
    """A ``chat.completion`` object (protocol.ChatCompletionResponse); ``n`` choices per prompt."""
    return {**head, "usage": usage(choices, n),
            "choices": [{"index": c.index, "message": chat_message(c),
                         "logprobs": c.logprobs, "finish_reason": c.finish_reason} for c in choices]}


def completion_body(head: dict[str, Any], choices: Sequence[Choice], n: int = 1) -> dict[str, Any]:
    """A ``text_completion`` object (protocol.CompletionResponse); ``n`` choices per prompt."""
    return {**head, "usage": usage(choices, n),
            "choices": [{"index": c.index, "text": c.text, "logprobs": c.logprobs,
                         "finish_reason": c.finish_reason} for c in choices]}


def response_body(model: str, choice: Choice, body: Any) -> dict[str, Any]:
    """A Responses API ``response`` object for one chat choice: ``output[0]`` is the assistant
    message with one ``output_text`` part; ``status`` "incomplete" (reason
    ``max_output_tokens``) when the length limit cut it; ``body`` is the ResponsesRequest."""
    cut = choice.finish_reason == "length"
    return {"id": f"resp_{uuid.uuid4().hex}", "object": "response", "created_at": int(time.time()),
            "status": "incomplete" if cut else "completed",
            "incomplete_details": {"reason": "max_output_tokens"} if cut else None, "error": None, "model": model,
            "instructions": body.instructions, "max_output_tokens": body.max_output_tokens,
            "temperature": body.temperature, "top_p": body.top_p, "tools": [], "tool_choice": "auto",
            "parallel_tool_calls": False, "metadata": {}, "text": {"format": {"type": "text"}},
            "output": [{"type": "message", "id": f"msg_{uuid.uuid4().hex}", "role": "assistant",
                        "status": "incomplete" if cut else "completed",
                        "content": [{"type": "output_text", "text": choice.text, "annotations": []}]}],
            "usage": {"input_tokens": choice.prompt_tokens, "output_tokens": choice.completion_tokens,
                      "total_tokens": choice.prompt_tokens + choice.completion_tokens,
                      "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}}


def embeddings_body(data: list[dict[str, Any]], model: str, tokens: int) -> dict[str, Any]:
    """An embeddings ``list`` object (protocol.EmbeddingResponse); ``data`` items are
    ``{"object": "embedding", "index", "embedding"}``, ``tokens`` the input tokens."""
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def encode_vector(out: dict[str, Any], encoding: str, index: int,
                  dimensions: int | None = None) -> np.ndarray | str:
    """An embedding as float32 numbers, or base64 of its little-endian float32 bytes (OpenAI's
    encoding).

    "float" returns the float32 array itself: the JSON writers of every caller (orjson with
    ``OPT_SERIALIZE_NUMPY``: ``embed.service.render``, ``io.sinks.dumps_bytes``) write each value
    in its shortest float32 form (``-0.09443894``, not the 17-digit ``-0.09443894028663635`` of
    the same value widened to a Python float: ~2x fewer bytes for the client to read and parse),
    and that text parses back to the same float32 bits. base64 is 4 bytes a value (~1.37 x 4 in
    text), and decodes to the same bits exactly.

    Args:
        out: one model output, with ``embedding`` (a vector of floats).
        encoding: "float" or "base64" (the request's ``encoding_format``).
        index: the input's position in the request, for the error.
        dimensions: keep the first ``dimensions`` values and scale them back to unit length (L2),
            as OpenAI and vLLM do for a Matryoshka model (``requests.check_dimensions`` said
            the model is one); None: the whole vector as the model gave it.

    Raises:
        ApiError: 422 ``model_error`` when the output has no embedding; 400
            ``invalid_dimensions`` when ``dimensions`` exceeds the vector's length.
    """
    if "embedding" not in out:
        raise ApiError(422, f"the model returned no 'embedding' for input {index} (keys: {sorted(out)})",
                       param=f"input.{index}", code="model_error")
    vector = np.asarray(out["embedding"], dtype="<f4")
    if dimensions is not None:
        if dimensions > vector.shape[-1]:
            raise ApiError(400, f"dimensions={dimensions} exceeds the model's {vector.shape[-1]}; ask for at most "
                                f"{vector.shape[-1]}", param="dimensions", code="invalid_dimensions")
        vector = vector[:dimensions]
        norm = float(np.linalg.norm(vector))
        vector = (vector / norm if norm > 0 else vector).astype("<f4")
    if encoding == "base64":
        return base64.b64encode(vector.tobytes()).decode("ascii")
    return np.ascontiguousarray(vector, dtype=np.float32)  # native order: orjson writes only native arrays
