"""POST /v1/translations (``parainfer serve --task translate``): translate one text or a list.

Request ``{"input": str | [str], "source_lang": "en", "target_lang": "pt"}``; response
``{"object": "list", "data": [{"index", "translation"}], "model", "source_lang", "target_lang",
"usage"}``. One server translates both directions: each input goes to the batcher tagged with
its target language (``models.translate.tag``), so a batch may mix directions and every replica
runs both. Inputs of all requests are batched together by the shared dynamic batcher and
routed to the least busy replica, like embeddings; a full queue answers 429 (Retry-After), a
pair the model does not offer 400 naming the pairs it has, a server of another task 400.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from parainfer.errors import UsageError
from parainfer.models.translate import direction_for, normalize_lang, tag
from parainfer.serving.config import ServeConfig
from parainfer.openai.errors import ApiError
from parainfer.openai.protocol import MODEL_FIELD, ErrorResponse
from parainfer.serving.embed.service import ClientGone, InferenceService
from parainfer.serving.http.json_body import OrjsonRoute

CLIENT_CLOSED = 499
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 401, 413, 422, 429, 503, 504)}


class TranslationRequest(BaseModel):
    """POST /v1/translations. Unknown fields are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    input: Annotated[str | Annotated[list[str], Field(min_length=1)], Field(
        description="one text, or a non-empty list of texts (one translation each, same order); "
                    "paragraph and line breaks are kept")]
    source_lang: str = Field(default="en", description="language of the input: en | pt (pt-BR)")
    target_lang: str = Field(default="pt", description="language to translate into: pt | en")
    model: str = Field(default="", description=MODEL_FIELD)


class Translation(BaseModel):
    index: int
    translation: str


class TranslationUsage(BaseModel):
    prompt_tokens: int = Field(description="estimated source tokens (characters / 4 per sentence)")
    total_tokens: int


class TranslationResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Translation]
    model: str
    source_lang: str
    target_lang: str
    usage: TranslationUsage


def translation_routes(config: ServeConfig, service: InferenceService | None) -> APIRouter:
    """The translation route; ``service`` is None on a server of another task (it answers 400)."""
    router = APIRouter(tags=["v1"], responses=_ERRORS, route_class=OrjsonRoute)  # strict JSON as the other routes
    names = config.model_names()
    name = names.reported

    @router.post("/v1/translations", response_model=TranslationResponse)
    async def translations(body: TranslationRequest, request: Request) -> Any:
        """Translate one text or a list: ``data[i]`` = {index, translation}."""
        if service is None or config.task != "translate":
            raise ApiError(400, f"this server runs --task {config.task}; /v1/translations needs --task translate",
                           code="wrong_task")
        names.check(body.model)
        try:
            direction_for(body.source_lang, body.target_lang)
        except UsageError as e:
            raise ApiError(400, str(e), param="target_lang", code="unsupported_language_pair") from None
        texts = [body.input] if isinstance(body.input, str) else body.input
        try:
            outputs, tokens = await service.infer([tag(t, body.target_lang) for t in texts], request)
        except ClientGone:
            return Response(status_code=CLIENT_CLOSED)
        data = [{"index": i, "translation": out["translation"]} for i, out in enumerate(outputs)]
        return JSONResponse({"object": "list", "data": data, "model": name,
                             "source_lang": normalize_lang(body.source_lang),
                             "target_lang": normalize_lang(body.target_lang),
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    return router
