"""Answering a task's OpenAI batch request lines: validate, run together, shape the bodies.

``answer_requests(predictor, requests)`` is ``OpenAIBatchPredictor.predict``. Every request
is checked with the same pydantic schemas and rules as the online routes (a failing check is
that request's error body, with the online status code); then all embedding inputs go
through the encoder in one call and all generation prompts through the engine together, each
with its own SamplingParams.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from parainfer.errors import UsageError
from parainfer.openai.batch_file import ENDPOINTS, result_line
from parainfer.openai.bodies import Choice
from parainfer.serving.http.errors import ApiError, error_type
from parainfer.serving.generate.admission import check_prompts_fit
from parainfer.openai.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, error_body

CHAT, TEXT, EMBED = ENDPOINTS
SCHEMAS: dict[str, type[BaseModel]] = {CHAT: ChatCompletionRequest, TEXT: CompletionRequest, EMBED: EmbeddingRequest}
DEFAULT_TEXT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions, as the online route




@dataclass
class _Generation:
    """One generation request, prepared: its prompts and shared SamplingParams."""

    pos: int
    url: str
    prompts: list[list[int]]
    params: Any
    choices: list[Choice] = field(default_factory=list)


def answer_requests(predictor: Any, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result line per request line, in order (see the module doc)."""
    lines: list[dict[str, Any] | None] = [None] * len(requests)
    embeds: list[tuple[int, EmbeddingRequest]] = []
    gens: list[_Generation] = []
    for pos, req in enumerate(requests):
        try:
            url, body = parse_request(predictor, req)
            if url == EMBED:
                embeds.append((pos, body))
            else:
                gens.append(_prepare_generation(predictor, pos, url, body))
        except ApiError as e:
            lines[pos] = result_line(req["custom_id"], e.status, error_body(
                e.message, error_type(e.status), e.param, e.code))
    if embeds:
        _run_embeddings(predictor, embeds, requests, lines)
    if gens:
        _run_generation(predictor, gens, requests, lines)
    return lines  # type: ignore[return-value]


def parse_request(predictor: Any, req: dict[str, Any]) -> tuple[str, Any]:
    """(url, validated body) of a request line; raises ApiError as the online route would, plus
    400 for a method other than POST, an unknown url, a model not served, or ``stream``."""
    if str(req.get("method", "POST")).upper() != "POST":
        raise ApiError(400, f"method {req.get('method')!r} is not supported; batch requests use POST",
                       param="method", code="invalid_method")
    url = req.get("url")
    if url not in SCHEMAS:
        raise ApiError(400, f"url {url!r} is not supported; accepted: {', '.join(ENDPOINTS)}", param="url",
                       code="invalid_url")
    try:
        body = SCHEMAS[url].model_validate(req["body"])
    except ValidationError as exc:
        from fastapi.exceptions import RequestValidationError

        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        raise _validation_error(RequestValidationError(errors)) from None
    task = "embed" if url == EMBED else "generate"
    if not predictor.accepts_model(task, body.model):
        raise ApiError(400, f"model {body.model!r} is not served for {url}; accepted: "
                            f"{predictor.names[task]!r}", param="model", code="model_not_found")
    if getattr(body, "stream", False):
        raise ApiError(400, "stream is not supported in a batch; leave it false", param="stream", code="unsupported")
    return url, body


def _validation_error(exc: Any) -> ApiError:
    from parainfer.serving.http.errors import validation_error

    return validation_error(exc)


def _prepare_generation(predictor: Any, pos: int, url: str, body: Any) -> _Generation:
    """Prompts and SamplingParams of a generation request, with the online route's checks."""
    from parainfer.generation import SamplingParams
    from parainfer.serving.generate.admission import chat_messages, check_supported, structured_fields
    from parainfer.serving.generate.service import CHAT_DEFAULT_MAX_TOKENS

    check_supported(body)
    engine = predictor.sub("generate").engine
    if url == CHAT:
        try:
            prompts = [engine.format_chat(chat_messages(body))]
        except ApiError:
            raise
        except Exception as exc:  # a template that rejects the roles/order given
            raise ApiError(400, f"the model's chat template rejected the messages: {exc}", param="messages",
                           code="invalid_messages") from None
    else:
        if body.echo:
            raise ApiError(400, "echo is not supported; leave it false", param="echo", code="unsupported")
        prompts = _completion_prompts(engine, body.prompt)
    max_tokens = getattr(body, "max_completion_tokens", None) or body.max_tokens
    if max_tokens is None:
        room = engine.max_model_len - max(len(p) for p in prompts)
        max_tokens = DEFAULT_TEXT_MAX_TOKENS if url == TEXT else max(1, min(CHAT_DEFAULT_MAX_TOKENS, room))
    top_logprobs, response_format = structured_fields(engine, body)  # 400s as online
    try:
        params = SamplingParams(max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
                                seed=body.seed, stop=body.stop or [], ignore_eos=body.ignore_eos,
                                response_format=response_format, logprobs=top_logprobs)
    except UsageError as exc:
        raise ApiError(400, str(exc), code="invalid_sampling") from None
    check_prompts_fit(engine, prompts, params.max_tokens)
    return _Generation(pos, url, prompts, params)


def _completion_prompts(engine: Any, prompt: Any) -> list[list[int]]:
    """Token ids per prompt as the online /v1/completions takes them (text as is, ids pass)."""
    if isinstance(prompt, str):
        prompt = [prompt]
    if prompt and isinstance(prompt[0], int):
        prompt = [prompt]
    prompts = [engine.tokenizer.encode(p) if isinstance(p, str) else [int(t) for t in p] for p in prompt]
    vocab = len(engine.tokenizer)
    for i, ids in enumerate(prompts):
        if not ids:
            raise ApiError(400, f"prompt {i} is empty; give some text", param="prompt", code="empty_prompt")
        if not all(0 <= t < vocab for t in ids):
            raise ApiError(400, f"prompt {i} has token ids outside [0, {vocab})", param="prompt", code="invalid_token")
    return prompts


def _run_generation(predictor: Any, gens: list[_Generation], requests: list[dict[str, Any]],
                    lines: list[Any]) -> None:
    from parainfer.openai.bodies import chat_completion_body, completion_body, completion_head
    from parainfer.openai.logprobs import chat_logprobs, completion_logprobs

    engine = predictor.sub("generate").engine
    flat = [(g, i, ids) for g in gens for i, ids in enumerate(g.prompts)]
    results = engine.generate([ids for _, _, ids in flat], [g.params for g, _, _ in flat])
    for (g, i, _), res in zip(flat, results):
        g.choices.append(Choice(i, res.text, res.finish_reason, res.prompt_tokens, res.completion_tokens))
        if res.logprobs is not None:
            shape = chat_logprobs if g.url == CHAT else completion_logprobs
            g.choices[-1].logprobs = shape(engine.tokenizer, res.logprobs)
    name = predictor.names["generate"]
    for g in gens:
        if g.url == CHAT:
            body = chat_completion_body(completion_head("chat", name), g.choices)
        else:
            body = completion_body(completion_head("text", name), g.choices)
        lines[g.pos] = result_line(requests[g.pos]["custom_id"], 200, body)


def _run_embeddings(predictor: Any, embeds: list[tuple[int, EmbeddingRequest]], requests: list[dict[str, Any]],
                    lines: list[Any]) -> None:
    from parainfer.openai.bodies import embeddings_body, encode_vector

    embedder = predictor.sub("embed")
    texts = [[b.input] if isinstance(b.input, str) else list(b.input) for _, b in embeds]
    flat = [t for group in texts for t in group]
    outputs = embedder.predict(flat)
    window = embedder.window()
    lengths = [min(n, window) if window else n for n in embedder.token_lengths(flat)]
    start = 0
    for (pos, body), group in zip(embeds, texts):
        outs, tokens = outputs[start:start + len(group)], sum(lengths[start:start + len(group)])
        start += len(group)
        data = [{"object": "embedding", "index": j, "embedding": encode_vector(out, body.encoding_format, j)}
                for j, out in enumerate(outs)]
        lines[pos] = result_line(requests[pos]["custom_id"], 200,
                                 embeddings_body(data, predictor.names["embed"], tokens))
