"""OpenAI's error envelope: the ``{"error": {"message", "type", "param", "code"}}`` body, its
``type`` per HTTP status, the ApiError that carries one, and the 400/422 a request that fails
validation gets. The online routes and the batch paths answer with these; the server's HTTP
handlers (``serving/http/errors.py``) turn an ApiError into a response.
"""

from __future__ import annotations

from typing import Any

_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error",
          503: "service_unavailable", 504: "timeout"}


def error_type(status: int) -> str:
    """OpenAI's error ``type`` for an HTTP status: the named ones, else invalid_request_error
    for any other 4xx and server_error for 5xx."""
    return _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The JSON of an error response: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class ApiError(Exception):
    """An error answer: HTTP ``status``, ``message``, the request field it is about (``param``,
    or None), OpenAI's ``code`` (or None) and extra response ``headers`` (e.g. Retry-After)."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers

    def body(self) -> dict[str, Any]:
        """The error's JSON body, its ``type`` from the status (``error_type``)."""
        return error_body(self.message, error_type(self.status), self.param, self.code)


def _field(loc: tuple[Any, ...]) -> str:
    """("body", "input", 3) -> "input.3"; a union's branch names ("str", "list[str]") are dropped."""
    parts = [str(p) for p in loc[1:] if p not in ("str", "int") and not str(p).startswith(("function-", "list["))]
    return ".".join(parts) or "body"


def validation_error(errors: list[dict[str, Any]]) -> ApiError:
    """The answer to a request body that failed validation: 400 for JSON that does not parse or
    is not an object, else 422 naming the first bad field.

    Args:
        errors: pydantic's error dicts (``ValidationError.errors()``), each ``loc`` starting
            with "body" (as FastAPI's RequestValidationError gives them).
    """
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
