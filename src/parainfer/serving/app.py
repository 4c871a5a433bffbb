"""The HTTP app: OpenAI-compatible routes over a ``service.Service``.

Routes: POST /v1/embeddings (--task embed), POST /v1/classify (--task classify),
POST /v1/completions and /v1/chat/completions (--task generate, in ``generation_routes``),
POST /v1/translations (--task translate, in ``translation_routes``),
GET /v1/models, GET /health (503 until every replica, or the engine, has loaded), GET /metrics
(Prometheus text), GET /dashboard (the live page over the same metrics: ``dashboard``), plus FastAPI's /openapi.json and /docs. ``create_app(config)`` builds a fresh
app with its own metrics registry; the lifespan starts the workers (or loads the generation
engine) and, on shutdown (after uvicorn has finished the in-flight requests), stops them.
"""

from __future__ import annotations

import inspect
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

import numpy as np
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse

from parainfer import __version__
from parainfer.models.base import Predictor
from parainfer.models.registry import build_predictor
from parainfer.openai.bodies import encode_vector
from parainfer.serving.batch_api.api import BatchApi
from parainfer.serving.batch_api.runner import OnlineGate
from parainfer.serving.config import ServeConfig
from parainfer.serving.dashboard import API_PREFIX as DASHBOARD_API, ServeDashboard, dashboard_routes
from parainfer.serving.http.json_body import OrjsonRoute
from parainfer.openai.errors import ApiError
from parainfer.openai.requests import check_dimensions, embedding_inputs
from parainfer.serving.http.errors import install_error_handlers
from parainfer.serving.generate.routes import generation_routes
from parainfer.serving.generate.service import GenerationService
from parainfer.serving.http.guards import JsonContentTypeMiddleware, LoopbackGuardMiddleware, binds_loopback
from parainfer.serving.metrics import ServingMetrics
from parainfer.serving.service import Service
from parainfer.serving.batch_api.files import UploadAwareBodyLimit
from parainfer.serving.http.auth import AuthMiddleware, KeySet
from parainfer.serving.http.middleware import MetricsMiddleware
from parainfer.openai.protocol import (
    ClassifyRequest,
    ClassifyResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ErrorResponse,
    ModelList,
)
from parainfer.serving.embed.service import ClientGone, InferenceService
from parainfer.serving.translate.routes import translation_routes

CLIENT_CLOSED = 499  # nginx's code for "client closed request"; nobody reads it
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in
                                            (400, 401, 403, 413, 415, 422, 429, 503, 504)}


def create_app(config: ServeConfig, predictor: Predictor | None = None) -> FastAPI:
    """Build the app (workers start with its lifespan, not here).

    Args:
        config: the server settings.
        predictor: an unloaded predictor; default ``build_predictor(config.task, config.model, ...)``
            (not used by ``--task generate``, whose engine loads in the lifespan).

    Raises:
        UsageError: unknown model or task (from the registry); an API key file that cannot be
            read or holds a bad line.
    """
    keys = KeySet.from_settings(config.api_key, config.api_keys_file)
    metrics = ServingMetrics()
    service = _make_service(config, predictor, metrics)
    generator = service if isinstance(service, GenerationService) else None
    batches = service if isinstance(service, InferenceService) else None
    batch_api = BatchApi(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        await batch_api.start(app)
        try:
            yield
        finally:
            await batch_api.stop()
            await service.stop()

    lenient = {"strict_content_type": False} if "strict_content_type" in inspect.signature(FastAPI).parameters else {}
    app = FastAPI(title="parainfer", version=__version__, lifespan=lifespan, **lenient,
                  description="OpenAI-compatible embeddings, classification and text generation.")
    app.state.service, app.state.config, app.state.metrics = service, config, metrics
    app.state.batch_api = batch_api  # its ``load`` is the online-load state the batch runner yields to
    install_error_handlers(app)
    app.include_router(_v1_routes(config, batches))
    app.include_router(generation_routes(config, generator))
    app.include_router(translation_routes(config, batches if config.task == "translate" else None))
    app.include_router(_ops_routes(service, metrics))
    app.include_router(batch_api.router)  # /v1/files, /v1/batches
    app.include_router(dashboard_routes(ServeDashboard(metrics, service, batch_api)))  # /dashboard
    app.add_middleware(OnlineGate, load=batch_api.load)
    app.add_middleware(UploadAwareBodyLimit, max_bytes=config.max_body_bytes,
                       upload_bytes=int(config.max_file_mb * (1 << 20)))
    app.add_middleware(JsonContentTypeMiddleware)
    if keys is not None:  # no key: an open server, every client one owner (docs/serving.md, "Authentication")
        app.add_middleware(AuthMiddleware, keys=keys)
        app.add_middleware(AuthMiddleware, keys=keys, prefix=DASHBOARD_API)  # the dashboard's data, same keys
    if binds_loopback(config.host):
        app.add_middleware(LoopbackGuardMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: counts 401s and 413s too
    return app


def _make_service(config: ServeConfig, predictor: Predictor | None, metrics: ServingMetrics) -> Service:
    """A ``GenerationService`` for ``--task generate`` (a ``.gguf`` model's header checked first), else an ``InferenceService`` over
    ``predictor`` (default: the registry's predictor for the task; translate: both directions)."""
    if config.task == "generate":
        from parainfer.generation.model_store import gguf_architecture, is_gguf_path

        if config.model and is_gguf_path(config.model):
            gguf_architecture(config.model)  # a bad or unsupported file: a one-line error now, not at load
        return GenerationService(config, metrics)
    both_directions = {"source_lang": None, "target_lang": None} if config.task == "translate" else {}
    predictor = predictor or build_predictor(config.task, config.model, config.dtype, config.device,
                                             trust=config.trust, backend=config.backend, **both_directions)
    choose_backend(predictor, config)
    return InferenceService(config, predictor, metrics)


def choose_backend(predictor: Predictor, config: ServeConfig) -> None:
    """Resolve ``--backend`` once, here, before the replicas start (``models.backend.decide``,
    timed with each replica's thread share): the replicas load the chosen path and measure
    nothing. The choice is logged on stderr (the batch job's summary line)."""
    import sys

    from parainfer.executors import default_threads
    from parainfer.models.backend import decide, summary

    choice = decide(predictor, config.recalibrate, config.threads_per_worker or default_threads(config.workers or 1))
    if choice is not None and choice["decision"] != "forced":
        print(summary(choice), file=sys.stderr)


async def _infer(service: InferenceService, texts: list[str], request: Request) -> tuple[list[dict], int] | Response:
    try:
        return await service.infer(texts, request)
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED)


def _wrong_task(config: ServeConfig, route: str, needed: str) -> ApiError:
    use = {"embed": "/v1/embeddings", "classify": "/v1/classify",
           "generate": "/v1/completions or /v1/chat/completions", "translate": "/v1/translations"}[config.task]
    return ApiError(400, f"this server runs --task {config.task}; {route} needs --task {needed} (use {use})",
                    code="wrong_task")


def _v1_routes(config: ServeConfig, service: InferenceService | None) -> APIRouter:
    """/v1/embeddings, /v1/classify (``service`` None on a generate server: they answer 400) and
    /v1/models."""
    router = APIRouter(tags=["v1"], responses=_ERRORS, route_class=OrjsonRoute)  # full paths: route labels in metrics stay whole
    names = config.model_names()
    name = names.reported
    created = int(time.time())
    matryoshka = service.predictor.matryoshka_dimensions() if service is not None and config.task == "embed" else False

    async def answer_list(task: str, route: str, body: EmbeddingRequest | ClassifyRequest, request: Request,
                          item: Callable[[int, dict], dict], check: Callable[[], None] = lambda: None) -> Any:
        """The path both list endpoints share: task, model and input checks (``check``: the
        route's own, after those), inference, then ``{object: list, data: [item(i, output)],
        model, usage}`` (or the client-closed answer)."""
        if config.task != task:
            raise _wrong_task(config, route, task)
        names.check(body.model)
        texts = embedding_inputs(body.input)
        check()
        got = await _infer(service, texts, request)
        if isinstance(got, Response):
            return got
        outputs, tokens = got
        return await service.render(lambda: {
            "object": "list", "data": [item(i, out) for i, out in enumerate(outputs)],
            "model": name, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}, len(outputs), request)

    @router.post("/v1/embeddings", response_model=EmbeddingResponse)
    async def embeddings(body: EmbeddingRequest, request: Request) -> Any:
        """Embed one text or a list of texts (OpenAI's embeddings API; ``dimensions`` on a
        Matryoshka model only)."""
        return await answer_list("embed", "/v1/embeddings", body, request, lambda i, out: {
            "object": "embedding", "index": i,
            "embedding": encode_vector(out, body.encoding_format, i, body.dimensions)},
            check=lambda: check_dimensions(body.dimensions, matryoshka, name))

    @router.post("/v1/classify", response_model=ClassifyResponse)
    async def classify(body: ClassifyRequest, request: Request) -> Any:
        """Classify one text or a list: ``data[i]`` = {index, label, score} (plus any other model outputs)."""
        return await answer_list("classify", "/v1/classify", body, request,
                                 lambda i, out: {"index": i, **{k: _plain(v) for k, v in out.items()}})

    @router.get("/v1/models", response_model=ModelList)
    async def models() -> Any:
        """The one model this server runs, under each of its names (``--served-model-name``)."""
        return {"object": "list", "data": [{"id": n, "object": "model", "created": created,
                                            "owned_by": "parainfer", "task": config.task} for n in names.names]}

    return router


def _ops_routes(service: Service, metrics: ServingMetrics) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/health")
    async def health() -> JSONResponse:
        """200 once every replica (or the generation engine) has loaded and can take work, else 503."""
        return JSONResponse(service.health(), status_code=200 if service.ready else 503)

    @router.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus text exposition (own registry)."""
        metrics.queue_depth.set(service.queue_depth)
        return Response(metrics.render(), media_type=metrics.content_type)

    return router


def _plain(value: Any) -> Any:
    """numpy scalars/arrays -> JSON-able Python values."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
