"""The HTTP handlers that answer every failure in OpenAI's error envelope (``openai.errors``).

``install_error_handlers`` answers validation errors, over-long lists, HTTP exceptions and
``ApiError``s with their status and code (bad input never yields 500); no exception text reaches
a client: a server fault is logged with the request id (``request_id``, also sent as the
``x-request-id`` header) and answered with a generic message naming that id. Which status
means what: docs/serving.md, "Errors, backpressure, limits".
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from parainfer.openai.errors import ApiError, validation_error
from parainfer.openai.protocol import TooManyItems

log = logging.getLogger(__name__)
_REQUEST_ID = "parainfer.request_id"


def request_id(scope: dict[str, Any]) -> str:
    """This request's id (made on first use, kept in the ASGI scope; sent as ``x-request-id``)."""
    rid = scope.get(_REQUEST_ID)
    if rid is None:
        rid = scope[_REQUEST_ID] = uuid.uuid4().hex[:16]
    return rid


def error_response(exc: ApiError) -> JSONResponse:
    """The HTTP response of an ApiError: its OpenAI error body, status and headers."""
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Make validation errors, HTTPExceptions and ApiErrors answer in the OpenAI envelope."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc.errors()))

    @app.exception_handler(TooManyItems)
    async def _too_many(_: Request, exc: TooManyItems) -> JSONResponse:
        return error_response(ApiError(413, f"{exc}; split the list into several requests", param=exc.field,
                                       code="too_many_inputs"))

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        return error_response(ApiError(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None)))

    @app.exception_handler(Exception)
    async def _fault(request: Request, exc: Exception) -> JSONResponse:
        rid = request_id(request.scope)
        log.error("request %s failed", rid, exc_info=exc)
        return error_response(ApiError(500, f"internal error (request id {rid}); the details are in the server log",
                                       code="internal_error"))
