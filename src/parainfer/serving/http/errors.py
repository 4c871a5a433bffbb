"""HTTP errors in OpenAI's envelope, and the handlers that make every failure one of them.

Status codes: 400 malformed JSON, wrong task for the route, a lone surrogate in a text, or
(generate) a prompt + max_tokens over the context window or an unsupported option; 401 API key;
403 a cross-site or DNS-rebinding request to a loopback server; 405 wrong method; 413 too many
inputs or body too large; 415 a JSON route without ``Content-Type: application/json``; 422 a
field of the wrong type/shape (the message names it, e.g. ``input.3``), or the model raised on
one input; 429 queue full (with Retry-After); 503 no replica / engine rebuilding; 504 past
--request-timeout-s. Bad input never yields 500. No exception text reaches a client: a server
fault is logged with the request id (also sent as the ``x-request-id`` header) and answered
with a generic message naming that id.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from parainfer.openai.protocol import TooManyItems, error_body

_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error",
          503: "service_unavailable", 504: "timeout"}
log = logging.getLogger(__name__)
_REQUEST_ID = "parainfer.request_id"


def error_type(status: int) -> str:
    """OpenAI's error ``type`` for an HTTP status: the named ones, else invalid_request_error
    for any other 4xx and server_error for 5xx."""
    return _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")


def request_id(scope: dict[str, Any]) -> str:
    """This request's id (made on first use, kept in the ASGI scope; sent as ``x-request-id``)."""
    rid = scope.get(_REQUEST_ID)
    if rid is None:
        rid = scope[_REQUEST_ID] = uuid.uuid4().hex[:16]
    return rid


class ApiError(Exception):
    """An error answer: status, message, and the request field it is about (if any)."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers

    def response(self) -> JSONResponse:
        return JSONResponse(error_body(self.message, error_type(self.status), self.param, self.code),
                            status_code=self.status, headers=self.headers)


def _field(loc: tuple[Any, ...]) -> str:
    """("body", "input", 3) -> "input.3"; a union's branch names ("str", "list[str]") are dropped."""
    parts = [str(p) for p in loc[1:] if p not in ("str", "int") and not str(p).startswith(("function-", "list["))]
    return ".".join(parts) or "body"


def validation_error(exc: RequestValidationError) -> ApiError:
    """400 for JSON that does not parse, else 422 naming the first bad field."""
    errors = exc.errors()
    # In a union (str | list[str]) the deepest error is the telling one: "input.3" over "input".
    first = max(errors, key=lambda e: len(e["loc"])) if errors else {"type": "", "loc": ("body",), "msg": "invalid"}
    if first["type"] == "json_invalid":
        detail = first.get("ctx", {}).get("error", "")
        return ApiError(400, f"request body is not valid JSON: {detail} at position {first['loc'][-1]}",
                        code="invalid_json")
    field = _field(tuple(first["loc"]))
    if field == "body" and isinstance(first.get("input"), (bytes, str)):
        return ApiError(400, "request body must be a JSON object (send Content-Type: application/json)",
                        code="invalid_json")
    if first["type"] == "missing":
        return ApiError(422, f"field '{field}' is required", param=field, code="missing_field")
    given = first.get("input")
    shown = repr(given)[:80] if not isinstance(given, dict) else "an object"
    return ApiError(422, f"field '{field}': {first['msg']} (got {shown})", param=field, code="invalid_field")


def install_error_handlers(app: FastAPI) -> None:
    """Make validation errors, HTTPExceptions and ApiErrors answer in the OpenAI envelope."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error(exc).response()

    @app.exception_handler(TooManyItems)
    async def _too_many(_: Request, exc: TooManyItems) -> JSONResponse:
        return ApiError(413, f"{exc}; split the list into several requests", param=exc.field,
                        code="too_many_inputs").response()

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        return ApiError(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None)).response()

    @app.exception_handler(Exception)
    async def _fault(request: Request, exc: Exception) -> JSONResponse:
        rid = request_id(request.scope)
        log.error("request %s failed", rid, exc_info=exc)
        return ApiError(500, f"internal error (request id {rid}); the details are in the server log",
                        code="internal_error").response()
