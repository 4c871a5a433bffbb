"""Request and response bodies (pydantic), shaped like OpenAI's embeddings API.

``input`` is one string or a non-empty list of strings; every response lists one entry per
input with its ``index`` (position in ``input``). Errors use OpenAI's envelope:
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Inputs = Annotated[str | Annotated[list[str], Field(min_length=1)], Field(
    description="one text, or a non-empty list of texts (one result each, same order)")]


class EmbeddingRequest(BaseModel):
    """POST /v1/embeddings. Unknown fields (``user``, ``dimensions``) are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    input: Inputs
    model: str = Field(default="", description="accepted for compatibility; the served model answers")
    encoding_format: Literal["float", "base64"] = Field(
        default="float", description="base64: the little-endian float32 bytes of each vector, base64-encoded")


class ClassifyRequest(BaseModel):
    """POST /v1/classify."""

    model_config = ConfigDict(extra="ignore")

    input: Inputs
    model: str = ""


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="floats, or a base64 string of float32 LE bytes")


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class Classification(BaseModel):
    """One input's result: ``label`` and ``score`` for a classifier, plus whatever else the model returns."""

    model_config = ConfigDict(extra="allow")

    index: int
    label: str | None = None
    score: float | None = None


class ClassifyResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Classification]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "parainfer"
    task: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The JSON of an error response."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
