"""OpenAI's rules for a validated request: which ``model`` names it may give (``ModelNames``, every
route), its embedding inputs and ``dimensions`` (``embedding_inputs``, ``check_dimensions``);
for generation, checked against the engine that answers it: supported options, chat messages as
plain dicts, logprobs fields, response_format, the context window, and the SamplingParams the
fields make. The online routes and the batch predictor apply the same rules; each failure is an
ApiError with the status the online endpoint answers.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from parainfer.errors import UsageError
from parainfer.models.registry import served_model_name
from parainfer.openai.errors import ApiError, validation_error
from parainfer.openai.protocol import CHAT_DEFAULT_MAX_TOKENS, COMPLETION_DEFAULT_MAX_TOKENS, MAX_CHOICES


@dataclass(frozen=True)
class ModelNames:
    """The ``model`` names one endpoint answers to, and the rule every route and batch path
    applies to a request's ``model`` (docs/serving.md, "Model names").

    One model is served per endpoint, so by default any name is accepted (a file or client
    written for OpenAI, ``text-embedding-3-small`` say, runs unchanged) and answered by the
    served model, whose name the response reports. Names given with ``--served-model-name``
    (vLLM's option) are aliases, and then the only names accepted: any other gets 404
    ``model_not_found``, as on vLLM and OpenAI.

    Attributes:
        names: the served names, non-empty; the first is reported in responses and first in
            /v1/models.
        strict: only ``names`` (or no ``model`` at all) are accepted.
    """

    names: tuple[str, ...]
    strict: bool = False

    @classmethod
    def of(cls, task: str, model: str | None, served_names: list[str] | None = None) -> ModelNames:
        """The names of ``--model`` for ``task`` (``registry.served_model_name``), or the
        ``--served-model-name`` values when given (then strict)."""
        if served_names:
            return cls(tuple(served_names), strict=True)
        return cls((served_model_name(task, model),))

    @property
    def reported(self) -> str:
        """The name responses report as ``model``."""
        return self.names[0]

    def check(self, requested: str | None) -> None:
        """Raise unless a request naming ``requested`` ("" or None: no name) may be answered.

        Raises:
            ApiError: 404 ``model_not_found`` naming the model and the served names (strict only).
        """
        if self.strict and requested and requested not in self.names:
            raise ApiError(404, f"the model {requested!r} does not exist on this server; served: "
                                f"{', '.join(map(repr, self.names))} (--served-model-name)", param="model",
                           code="model_not_found")


def embedding_inputs(value: str | list[str]) -> list[str]:
    """The texts of an embeddings or classify request's ``input`` (one string or a list), in order.

    Raises:
        ApiError: 400 ``empty_input`` for an empty list or an empty string (OpenAI refuses both;
            an empty text has nothing to embed), naming it (``input`` or ``input.3``).
    """
    texts = [value] if isinstance(value, str) else value
    if not texts:
        raise ApiError(400, "input is an empty list; give one text or a non-empty list of texts", param="input",
                       code="empty_input")
    if "" in texts:
        where = "input" if isinstance(value, str) else f"input.{texts.index('')}"
        raise ApiError(400, f"{where} is an empty string; every input needs some text", param=where,
                       code="empty_input")
    return texts


def check_dimensions(dimensions: int | None, matryoshka: bool | list[int], model: str) -> int | None:
    """An embeddings request's ``dimensions``, checked against the model as vLLM checks it.

    A model trained for truncated embeddings (Matryoshka representation learning: its
    config.json says ``is_matryoshka`` or lists ``matryoshka_dimensions``) answers with the first
    ``dimensions`` values scaled back to unit length (``bodies.encode_vector``). Any other model
    would return worse vectors, so the request is refused, whatever the number.

    Args:
        dimensions: the request's value (None: not given; >= 1, checked by the schema).
        matryoshka: the model's ``Predictor.matryoshka_dimensions()``: False, True (any size)
            or the sizes it was trained for.
        model: the served name, for the message.

    Returns:
        ``dimensions`` (None when not given).

    Raises:
        ApiError: 400 ``invalid_dimensions``: a model not trained for it, or a size it was not
            trained for.
    """
    if dimensions is None:
        return None
    if not matryoshka:
        raise ApiError(400, f"model {model!r} does not support matryoshka representation: truncating its "
                            f"vectors to dimensions={dimensions} would give poor embeddings; leave dimensions "
                            "unset", param="dimensions", code="invalid_dimensions")
    if matryoshka is not True and dimensions not in matryoshka:
        raise ApiError(400, f"model {model!r} supports only the matryoshka dimensions {sorted(matryoshka)}; got "
                            f"dimensions={dimensions}", param="dimensions", code="invalid_dimensions")
    return dimensions


def check_supported(body: Any) -> None:
    """Raise 400 for fields the engine does not implement: ``n`` outside 1..MAX_CHOICES
    (``invalid_n``), a bad ``tools`` / ``tool_choice`` (``tool_choice``)."""
    if isinstance(body.n, bool) or not 1 <= body.n <= MAX_CHOICES:
        raise ApiError(400, f"n={body.n} is out of range; accepted: 1..{MAX_CHOICES} choices per prompt",
                       param="n", code="invalid_n")
    if hasattr(body, "messages"):
        tool_choice(body)


def choice_params(params: Any, n: int) -> list[Any]:
    """The SamplingParams of each of ``n`` choices of one prompt.

    Choice ``i`` samples with ``seed + i`` (vLLM's rule for its parallel sampling), wrapped into
    the 64-bit range torch takes, so choice 0 is what ``n=1`` gives and every choice is
    reproducible; without a seed every choice draws its own random one. Greedy choices are
    identical.
    """
    from parainfer.generation.sampling_params import SEED_MAX

    if n == 1:
        return [params]
    if params.seed is None:
        return [replace(params) for _ in range(n)]
    return [replace(params, seed=params.seed + i - (2**64 if params.seed + i > SEED_MAX else 0)) for i in range(n)]


def expand_choices(prompts: list[list[int]], params: Any, n: int) -> tuple[list[list[int]], list[Any]]:
    """One sequence per choice: ``n`` copies of each prompt (choice index ``p * n + i`` for choice
    ``i`` of prompt ``p``, OpenAI's numbering) and their SamplingParams (``choice_params``).
    Copies of one prompt share its cached prefix in an engine with prefix caching."""
    per_choice = choice_params(params, n)
    return [ids for ids in prompts for _ in range(n)], [p for _ in prompts for p in per_choice]


# ---- tools (chat only) ----------------------------------------------------------------------------


def _tool_names(body: Any) -> list[str]:
    """The function names of ``body.tools``, checked.

    Raises:
        ApiError: 400 ``invalid_tools`` for a tool that is not ``{"type": "function", "function":
            {"name": str, "parameters": object}}``.
    """
    names = []
    for i, tool in enumerate(body.tools or []):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or tool.get("type", "function") != "function" or not isinstance(
                fn.get("name"), str) or not fn["name"] or not isinstance(fn.get("parameters", {}), dict):
            raise ApiError(400, f"tools.{i} must be {{\"type\": \"function\", \"function\": {{\"name\": ..., "
                                "\"parameters\": {JSON schema}}}}}", param=f"tools.{i}", code="invalid_tools")
        names.append(fn["name"])
    return names


def tool_choice(body: Any) -> tuple[str, str | None]:
    """``(mode, name)`` of a chat request: mode "none" (no tools, or ``tool_choice: "none"``),
    "auto" (the default with tools), "required", or "named" with the function's name.

    Raises:
        ApiError: 400 ``invalid_tool_choice`` for an unknown value, a name not in ``tools``, or a
            call required with no tools; ``invalid_tools`` as ``_tool_names``.
    """
    names, choice = _tool_names(body), getattr(body, "tool_choice", None)
    if choice is None:
        return ("auto" if names else "none"), None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") if choice.get("type") == "function" else None
        if name not in names:
            raise ApiError(400, f"tool_choice names the function {name!r}, which is not in tools ({names})",
                           param="tool_choice", code="invalid_tool_choice")
        return "named", name
    if choice not in ("none", "auto", "required"):
        raise ApiError(400, f"tool_choice={choice!r}; accepted: 'none', 'auto', 'required' or "
                            '{"type": "function", "function": {"name": ...}}', param="tool_choice",
                       code="invalid_tool_choice")
    if choice != "none" and not names:
        raise ApiError(400, f"tool_choice={choice!r} needs tools", param="tool_choice", code="invalid_tool_choice")
    return choice, None


def tool_call_format(body: Any) -> dict | None:
    """The ``response_format`` that forces a tool call (tool_choice "required" or named): a JSON
    object ``{"name": <a function's name>, "arguments": <its parameters schema>}``, compiled and
    enforced by the same grammar machinery as a ``json_schema`` response_format (each schema's
    ``$defs`` move to the root, where its ``#/$defs/...`` refs resolve). None when no call is
    forced.

    Raises:
        ApiError: 400 ``invalid_tool_choice`` when ``response_format`` is set too;
            ``invalid_tools`` when two tools define one ``$defs`` name differently.
    """
    if not hasattr(body, "messages"):
        return None
    mode, name = tool_choice(body)
    if mode not in ("required", "named"):
        return None
    if body.response_format is not None and body.response_format.get("type") != "text":
        raise ApiError(400, f"tool_choice={body.tool_choice!r} and response_format cannot both constrain the "
                            "output; leave one out", param="response_format", code="invalid_tool_choice")
    branches, defs = [], {}
    for fn in (t["function"] for t in body.tools):
        if mode == "named" and fn["name"] != name:
            continue
        params = dict(fn.get("parameters") or {"type": "object"})
        for key, value in params.pop("$defs", {}).items():  # "#/$defs/X" refs resolve from the root
            if defs.setdefault(key, value) != value:
                raise ApiError(400, f"tools define $defs/{key} differently; give the definitions distinct names",
                               param="tools", code="invalid_tools")
        branches.append({"type": "object", "properties": {"name": {"const": fn["name"]}, "arguments": params},
                         "required": ["name", "arguments"], "additionalProperties": False})
    schema = branches[0] if len(branches) == 1 else {"anyOf": branches}
    if defs:
        schema = {**schema, "$defs": defs}
    return {"type": "json_schema", "json_schema": {"name": "tool_call", "schema": schema}}


def output_format(body: Any) -> dict | None:
    """What constrains the output: the forced tool call's format, else ``response_format``."""
    return tool_call_format(body) or body.response_format


def tool_calls_in(body: Any, text: str) -> list[dict[str, Any]] | None:
    """The tool call the output ``text`` makes, in OpenAI's shape ``[{"id", "type": "function",
    "function": {"name", "arguments": JSON text}}]``; None when it makes none.

    A forced call (``tool_call_format``) is the JSON object the grammar produced (None if it was
    cut by ``max_tokens``). With ``auto``, the text is a call only when it is, whole or inside
    ``<tool_call>...</tool_call>`` (the tag of Hermes-style chat templates), a JSON object
    ``{"name": <one of the tools>, "arguments": {...}}`` (or ``"parameters"``); anything else is
    the answer's content.
    """
    mode, _ = tool_choice(body)
    if mode == "none":
        return None
    inner = text.strip()
    if "<tool_call>" in inner:
        inner = inner.split("<tool_call>", 1)[1].split("</tool_call>", 1)[0].strip()
    try:
        call = json.loads(inner)
    except ValueError:
        return None
    if not isinstance(call, dict) or call.get("name") not in _tool_names(body):
        return None
    args = call.get("arguments", call.get("parameters", {}))
    if not isinstance(args, dict):
        return None
    return [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
             "function": {"name": call["name"], "arguments": json.dumps(args, ensure_ascii=False)}}]


def apply_tool_calls(body: Any, choices: list[Any]) -> None:
    """Set ``tool_calls`` (and finish_reason "tool_calls", no content) on each finished chat
    choice whose text is a tool call (``tool_calls_in``)."""
    for c in choices:
        calls = tool_calls_in(body, c.text) if c.finish_reason == "stop" else None
        if calls:
            c.tool_calls, c.finish_reason = calls, "tool_calls"


def chat_messages(body: Any) -> list[dict[str, Any]]:
    """A chat request's messages as plain {role, content} dicts (``developer`` read as ``system``);
    text parts are joined; an assistant's ``tool_calls`` and a tool message's ``tool_call_id``
    and ``name`` are kept for the chat template.

    Raises:
        ApiError: 400 ``unsupported`` for a content part that is not text.
    """
    out = []
    for i, m in enumerate(body.messages):
        content = m.content
        if isinstance(content, list):
            kinds = {part.get("type") for part in content} - {"text"}
            if kinds:
                raise ApiError(400, f"messages.{i}.content has parts of type {sorted(map(str, kinds))}; only "
                                    "'text' parts are supported", param=f"messages.{i}.content", code="unsupported")
            content = "".join(str(part.get("text", "")) for part in content)
        message = {"role": "system" if m.role == "developer" else m.role, "content": content or ""}
        message.update({k: v for k in ("tool_calls", "tool_call_id", "name") if (v := getattr(m, k)) is not None})
        out.append(message)
    return out


def chat_request_of(body: Any) -> Any:
    """The ChatCompletionRequest a /v1/responses ``body`` (protocol.ResponsesRequest) stands for:
    ``instructions`` as a system message, then ``input`` (a string: one user message; else its
    messages, ``input_text`` / ``output_text`` parts read as text parts), ``max_output_tokens``
    as ``max_tokens``.

    Raises:
        ApiError: 400 ``unsupported`` for ``stream`` or an input item that is not a message.
    """
    from parainfer.openai.protocol import ChatCompletionRequest

    if body.stream:
        raise ApiError(400, "stream is not supported on /v1/responses; leave it false (or use "
                            "/v1/chat/completions)", param="stream", code="unsupported")
    items = [{"role": "user", "content": body.input}] if isinstance(body.input, str) else body.input
    messages = [{"role": "system", "content": body.instructions}] if body.instructions else []
    for i, item in enumerate(items):
        if item.get("type", "message") != "message" or "role" not in item:
            raise ApiError(400, f"input.{i} is of type {item.get('type')!r}; only messages are supported",
                           param=f"input.{i}", code="unsupported")
        content = item.get("content")
        if isinstance(content, list):
            content = [{**part, "type": "text"} if part.get("type") in ("input_text", "output_text") else part
                       for part in content]
        messages.append({"role": item["role"], "content": content})
    try:
        return ChatCompletionRequest(model=body.model, messages=messages, max_tokens=body.max_output_tokens,
                                     temperature=body.temperature, top_p=body.top_p)
    except ValidationError as exc:  # a message's role or content: named as input.<i> (instructions not counted)
        shift = 1 if body.instructions else 0
        raise validation_error([{**e, "loc": ("body", "input", e["loc"][1] - shift, *e["loc"][2:])}
                                if len(e["loc"]) > 1 and isinstance(e["loc"][1], int) else {**e, "loc": ("body", "input")}
                                for e in exc.errors()]) from None


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


def grammar_error(exc: UsageError) -> ApiError:
    """The answer to a ``response_format`` that cannot be used (a ``generation.grammar`` error):
    its ``status`` (400; 413 a schema over the size limit; 408 not compiled within the time
    budget) and ``code``, ``param: "response_format"``, the message naming the problem."""
    return ApiError(getattr(exc, "status", 400), str(exc), param="response_format",
                    code=getattr(exc, "code", "invalid_response_format"))


def structured_fields(engine: Any, body: Any, compile_grammar: bool = True) -> tuple[int | None, dict | None]:
    """The request's top-logprobs count and response_format, checked; with ``compile_grammar``
    the schema is compiled here (blocking the caller up to the engine's compile budget), so the
    engine finds it in its cache.

    Raises:
        ApiError: 400 bad logprobs fields; ``grammar_error`` naming why the response_format or
            its schema cannot be used.
    """
    from parainfer.generation.sampling_params import MAX_TOP_LOGPROBS

    top = requested_top_logprobs(body, hasattr(body, "messages"), MAX_TOP_LOGPROBS)
    response_format = output_format(body)
    if compile_grammar:
        try:
            engine.grammars.compile(response_format)
        except UsageError as exc:
            raise grammar_error(exc) from None
    return top, response_format


def start_grammar(engine: Any, response_format: dict | None) -> Any:
    """Check ``response_format``'s schema and start its compile in the engine's compile threads
    (``GrammarCompiler.submit``); returns its ticket (None when unconstrained) without waiting.

    Raises:
        ApiError: ``grammar_error``: 413 a schema over the size limit, 400 any other check.
    """
    try:
        return engine.grammars.submit(response_format)
    except UsageError as exc:
        raise grammar_error(exc) from None


def sampling_params(engine: Any, body: Any, prompts: list[list[int]], compile_grammar: bool = True) -> Any:
    """The SamplingParams of a chat or completion ``body`` whose prompts are ``prompts`` (token ids).

    ``max_tokens`` left unset: COMPLETION_DEFAULT_MAX_TOKENS for a completion; for a chat the rest
    of the context window after the longest prompt, at most CHAT_DEFAULT_MAX_TOKENS (at least 1).
    ``compile_grammar`` False leaves the schema to the caller (``start_grammar``).

    Raises:
        ApiError: 400 as ``structured_fields``, or ``invalid_sampling`` for values the
            engine refuses.
    """
    from parainfer.generation import SamplingParams

    max_tokens = getattr(body, "max_completion_tokens", None) or body.max_tokens
    if max_tokens is None and not hasattr(body, "messages"):
        max_tokens = COMPLETION_DEFAULT_MAX_TOKENS
    elif max_tokens is None:
        room = engine.max_model_len - max(len(p) for p in prompts)
        max_tokens = max(1, min(CHAT_DEFAULT_MAX_TOKENS, room))
    top_logprobs, response_format = structured_fields(engine, body, compile_grammar)
    try:
        return SamplingParams(max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
                              top_k=body.top_k, seed=body.seed, stop=body.stop or [], ignore_eos=body.ignore_eos,
                              response_format=response_format, logprobs=top_logprobs)
    except UsageError as exc:
        if hasattr(exc, "status"):  # the response_format's shape (grammar.SchemaError)
            raise grammar_error(exc) from None
        raise ApiError(400, str(exc), code="invalid_sampling") from None


def check_prompts_fit(engine: Any, prompts: list[list[int]], max_tokens: int) -> None:
    """Raise 400 ``context_length_exceeded`` unless every prompt (token ids) plus ``max_tokens``
    fits the engine's context window (``engine.check_fits``).

    Raises:
        ApiError: 400 naming the prompt (when there are several) and the engine's reason.
    """
    for i, ids in enumerate(prompts):
        try:
            engine.check_fits(len(ids), max_tokens)
        except UsageError as exc:
            which = f"prompt {i}: " if len(prompts) > 1 else ""
            raise ApiError(400, f"{which}{exc}; shorten the prompt or lower max_tokens", param="max_tokens",
                           code="context_length_exceeded") from None
