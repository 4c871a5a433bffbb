"""POST /v1/completions and POST /v1/chat/completions (OpenAI's schema), plain or streamed, and a
minimal non-streaming POST /v1/responses over the chat path.

``generation_routes`` builds both routes over a ``GenerationService``: plain answers, or
server-sent events in OpenAI's chunk format for ``stream: true`` (a client that leaves
mid-stream aborts its sequences in the engine); ``response_format`` constrains the output
(``generation.grammar``), and ``logprobs`` come in OpenAI's shapes (``openai.logprobs``), each
stream chunk carrying its own tokens'. On a server of another task the routes answer 400 naming
the task they need. The wire format: docs/serving.md, "Generation" (the routes).
"""

from __future__ import annotations

import json
import logging
from contextlib import aclosing
from typing import Any, AsyncIterator, Callable

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from parainfer.openai.bodies import chat_completion_body, completion_body, completion_head, response_body
from parainfer.serving.config import ServeConfig
from parainfer.serving.http.json_body import OrjsonRoute
from parainfer.openai.logprobs import chat_logprobs, completion_logprobs
from parainfer.openai.errors import ApiError, error_body
from parainfer.serving.http.errors import request_id
from parainfer.errors import UsageError
from parainfer.openai.requests import apply_tool_calls, chat_messages, chat_request_of, check_supported
from parainfer.openai.requests import grammar_error, tool_choice
from parainfer.serving.generate.service import Admitted, GenerationService, Reservation
from parainfer.serving.embed.service import ClientGone
from parainfer.openai.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    ResponsesRequest,
    SamplingFields,
)

CLIENT_CLOSED = 499
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in
                                            (400, 401, 403, 413, 415, 422, 429, 503, 504)}
log = logging.getLogger(__name__)
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def generation_routes(config: ServeConfig, service: GenerationService | None) -> APIRouter:
    """The two generation routes; ``service`` is None on an embed/classify server (they answer 400)."""
    router = APIRouter(tags=["v1"], responses=_ERRORS, route_class=OrjsonRoute)
    names = config.model_names()
    name = names.reported

    def need(route: str) -> GenerationService:
        if service is None:
            raise ApiError(400, f"this server runs --task {config.task}; {route} needs --task generate "
                                f"(use /v1/{dict(embed='embeddings', translate='translations').get(config.task, 'classify')})",
                           code="wrong_task")
        return service

    @router.post("/v1/completions", response_model=CompletionResponse)
    async def completions(body: CompletionRequest, request: Request) -> Any:
        """Complete one prompt or a list (one choice each); text prompts get no chat template."""
        gen = need("/v1/completions")
        names.check(body.model)
        check_supported(body)
        if body.echo:
            raise ApiError(400, "echo is not supported; leave it false", param="echo", code="unsupported")
        got = await gen.admit_completion(body)
        head = completion_head("text", name)
        if body.stream:
            return _sse(_completion_events(gen.stream(got.prompts, got.params, got.reservation), head,
                                           _include_usage(body), got.prompts, request,
                                           _chunk_logprobs(gen, got.params[0], chat=False), got.n), got.reservation)
        choices = await _complete(gen, got, request)
        if isinstance(choices, Response):
            return choices
        _shape_logprobs(choices, gen, chat=False)
        return JSONResponse(completion_body(head, choices, got.n))

    @router.post("/v1/chat/completions", response_model=ChatCompletionResponse)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
        """Answer a conversation with the model's chat template (``n`` choices; with ``tools``,
        a choice may be a tool call)."""
        gen = need("/v1/chat/completions")
        names.check(body.model)
        check_supported(body)
        got = await gen.admit_chat(body, chat_messages(body))
        head = completion_head("chat", name)
        if body.stream:
            head["object"] = "chat.completion.chunk"
            if tool_choice(body)[0] != "none":  # whether the text is a call is known at its end only
                return _sse(_buffered_chat_events(gen, got, head, _include_usage(body), request, body),
                            got.reservation)
            return _sse(_chat_events(gen.stream(got.prompts, got.params, got.reservation), head,
                                     _include_usage(body), got.prompts, request,
                                     _chunk_logprobs(gen, got.params[0], chat=True), got.n), got.reservation)
        choices = await _complete(gen, got, request)
        if isinstance(choices, Response):
            return choices
        _shape_logprobs(choices, gen, chat=True)
        apply_tool_calls(body, choices)
        return JSONResponse(chat_completion_body(head, choices, got.n))

    @router.post("/v1/responses")
    async def responses(body: ResponsesRequest, request: Request) -> Any:
        """OpenAI's Responses API, the minimal non-streaming subset, answered as a chat
        completion of the same messages (``requests.chat_request_of``)."""
        gen = need("/v1/responses")
        names.check(body.model)
        chat = chat_request_of(body)
        got = await gen.admit_chat(chat, chat_messages(chat))
        choices = await _complete(gen, got, request)
        if isinstance(choices, Response):
            return choices
        return JSONResponse(response_body(name, choices[0], body))

    return router


def _shape_logprobs(choices: list[Any], gen: GenerationService, chat: bool) -> None:
    """Fill each choice's OpenAI ``logprobs`` object from the engine's token logprobs."""
    tokenizer = gen.loop.engine.tokenizer if gen.loop is not None else None
    for c in choices:
        if c.token_logprobs is not None and tokenizer is not None:
            c.logprobs = (chat_logprobs(tokenizer, c.token_logprobs) if chat
                          else completion_logprobs(tokenizer, c.token_logprobs))


def _chunk_logprobs(gen: GenerationService, params: Any, chat: bool) -> Callable[[int, Any], Any] | None:
    """For a stream that asked for logprobs: ``(choice index, output) -> logprobs object`` of
    the output's new tokens (completions' ``text_offset`` continues across chunks); else None."""
    if params.logprobs is None or gen.loop is None:
        return None
    tokenizer, offsets = gen.loop.engine.tokenizer, {}

    def shape(i: int, out: Any) -> Any:
        entries = out.new_logprobs or []
        if chat:
            return chat_logprobs(tokenizer, entries)
        body = completion_logprobs(tokenizer, entries, offsets.get(i, 0))
        offsets[i] = offsets.get(i, 0) + sum(len(t) for t in body["tokens"])
        return body
    return shape


def _include_usage(body: SamplingFields) -> bool:
    return bool((body.stream_options or {}).get("include_usage"))


async def _complete(gen: GenerationService, got: Admitted, request: Request) -> Any:
    try:
        return await gen.complete(got.prompts, got.params, request, got.reservation)
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED)


class _ReleasingStream(StreamingResponse):
    """A StreamingResponse that releases the request's reservation however it ends (even when
    its body iterator never started: the client left before the first byte)."""

    def __init__(self, content: AsyncIterator[bytes], reservation: Reservation) -> None:
        super().__init__(content, media_type="text/event-stream", headers=SSE_HEADERS)
        self.reservation = reservation

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.reservation.release()


def _sse(events: AsyncIterator[dict[str, Any]], reservation: Reservation) -> StreamingResponse:
    async def encode() -> AsyncIterator[bytes]:
        async with aclosing(events) as chunks:
            async for chunk in chunks:
                yield b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"
    return _ReleasingStream(encode(), reservation)


async def _events(outputs: AsyncIterator[tuple[int, Any]], head: dict[str, Any], include_usage: bool,
                  prompts: list[list[int]], request: Request, choice: Callable[[int, Any], dict[str, Any] | None],
                  n: int = 1) -> AsyncIterator[dict[str, Any]]:
    """Chunks from engine outputs; ``choice(index, out)`` shapes one choice (None: nothing to send).
    ``prompts`` has one entry per choice, ``n`` per prompt: usage counts each prompt once.
    An engine failure mid-stream becomes an ``{"error": ...}`` event (the openai client raises it)
    with a generic message and the request id; the exception goes to the server log."""
    completion = [0] * len(prompts)
    try:
        async with aclosing(outputs) as outs:
            async for i, out in outs:
                if out is not None:  # None: chat's role delta, before any token
                    completion[i] = out.completion_tokens
                shaped = choice(i, out)
                if shaped is not None:
                    yield {**head, "choices": [shaped]}
    except (UsageError, ApiError) as exc:  # the request's own fault (its schema did not compile in time)?
        if isinstance(exc, UsageError) or exc.status < 500:
            yield (grammar_error(exc) if isinstance(exc, UsageError) else exc).body()
            return
        rid = request_id(request.scope)
        log.error("request %s: generation failed mid-stream: %s", rid, exc)
        yield error_body(f"generation failed (request id {rid}; see the server log); retry it", "server_error",
                         code="engine_error")
        return
    except Exception as exc:  # noqa: BLE001 - the status line was sent already
        rid = request_id(request.scope)
        log.error("request %s: generation failed mid-stream: %s: %s", rid, type(exc).__name__, exc)
        yield error_body(f"generation failed (request id {rid}; see the server log); retry it", "server_error",
                         code="engine_error")
        return
    if include_usage:
        prompt = sum(len(p) for p in prompts[::n])
        yield {**head, "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": sum(completion),
                                                "total_tokens": prompt + sum(completion)}}


def _completion_events(outputs: AsyncIterator[tuple[int, Any]], head: dict[str, Any], include_usage: bool,
                       prompts: list[list[int]], request: Request,
                       logprobs: Callable[[int, Any], Any] | None = None, n: int = 1) -> AsyncIterator[dict[str, Any]]:
    def choice(i: int, out: Any) -> dict[str, Any] | None:
        if not out.new_text and not out.finished and not (logprobs and out.new_logprobs):
            return None
        return {"index": i, "text": out.new_text, "logprobs": logprobs(i, out) if logprobs else None,
                "finish_reason": out.finish_reason if out.finished else None}
    return _events(outputs, head, include_usage, prompts, request, choice, n)


def _chat_events(outputs: AsyncIterator[tuple[int, Any]], head: dict[str, Any], include_usage: bool,
                 prompts: list[list[int]], request: Request,
                 logprobs: Callable[[int, Any], Any] | None = None, n: int = 1) -> AsyncIterator[dict[str, Any]]:
    async def with_role() -> AsyncIterator[tuple[int, Any]]:
        for i in range(len(prompts)):  # the role delta goes first, before any text
            yield i, None
        async with aclosing(outputs) as outs:
            async for item in outs:
                yield item

    def choice(i: int, out: Any) -> dict[str, Any] | None:
        if out is None:
            return {"index": i, "delta": {"role": "assistant"}, "logprobs": None, "finish_reason": None}
        lp = logprobs(i, out) if logprobs and out.new_logprobs else None
        if out.finished:
            delta = {"content": out.new_text} if out.new_text else {}
            return {"index": i, "delta": delta, "logprobs": lp, "finish_reason": out.finish_reason}
        return {"index": i, "delta": {"content": out.new_text}, "logprobs": lp, "finish_reason": None} \
            if out.new_text or lp else None
    return _events(with_role(), head, include_usage, prompts, request, choice, n)


def _buffered_chat_events(gen: GenerationService, got: Admitted, head: dict[str, Any], include_usage: bool,
                          request: Request, body: Any) -> AsyncIterator[dict[str, Any]]:
    """The stream of a chat request with tools: each choice's role delta first, then, once the
    choices are complete, one chunk each with its whole content or its tool call
    (``delta.tool_calls``) and its finish_reason."""
    async def outputs() -> AsyncIterator[tuple[int, Any]]:
        for i in range(len(got.prompts)):
            yield i, None
        choices = await gen.complete(got.prompts, got.params, request, got.reservation)
        _shape_logprobs(choices, gen, chat=True)
        apply_tool_calls(body, choices)
        for c in choices:
            yield c.index, c

    def choice(i: int, c: Any) -> dict[str, Any]:
        if c is None:
            return {"index": i, "delta": {"role": "assistant"}, "logprobs": None, "finish_reason": None}
        delta = ({"tool_calls": [{"index": k, **call} for k, call in enumerate(c.tool_calls)]} if c.tool_calls
                 else {"content": c.text})
        return {"index": i, "delta": delta, "logprobs": c.logprobs, "finish_reason": c.finish_reason}
    return _events(outputs(), head, include_usage, got.prompts, request, choice, got.n)
