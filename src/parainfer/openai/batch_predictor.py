"""``openai-batch``: the predictor that answers the request lines of an OpenAI batch file, every url.

``batch_file_predictor`` builds it for a job. Each worker holds two sub-predictors, built by the
job's predictor factory: an embedder (``/v1/embeddings``) and a generator (``/v1/chat/completions``,
``/v1/completions``), each loaded with the worker (start-up, in the report) when the file's lines
name its urls (``batch_file.urls_in``), else on its first request. ``predict`` checks every request with the online
routes' schemas and rules (``protocol``, ``requests``), runs all embedding inputs in one encoder
call and all generation prompts together in the engine (per-line SamplingParams), and returns one
result line per request, its ``body`` built by ``bodies`` as ``parainfer serve`` builds it. A
request that cannot be served gets the error body and status the online endpoint gives.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import BaseModel, ValidationError

from parainfer.counts import TokenCounts
from parainfer.errors import UsageError
from parainfer.models.base import Predictor
from parainfer.openai.batch_file import BATCH_TASK, ENDPOINTS, result_line, urls_in
from parainfer.openai.bodies import Choice, chat_completion_body, completion_body, completion_head
from parainfer.openai.bodies import embeddings_body, encode_vector
from parainfer.openai.errors import ApiError, validation_error
from parainfer.openai.logprobs import chat_logprobs, completion_logprobs
from parainfer.openai.protocol import CHAT_DEFAULT_MAX_TOKENS, COMPLETION_DEFAULT_MAX_TOKENS
from parainfer.openai.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from parainfer.openai.requests import ModelNames, chat_messages, check_dimensions, check_prompts_fit
from parainfer.openai.requests import apply_tool_calls, check_supported, embedding_inputs, expand_choices
from parainfer.openai.requests import sampling_params

CHAT, TEXT, EMBED = ENDPOINTS
SCHEMAS: dict[str, type[BaseModel]] = {CHAT: ChatCompletionRequest, TEXT: CompletionRequest, EMBED: EmbeddingRequest}
#: ``(task, model, dtype, device) -> unloaded Predictor``: ``models.registry.build_predictor`` fits.
MakePredictor = Callable[[str, str | None, str, str], Predictor]


def batch_file_predictor(config: Any, make_predictor: MakePredictor) -> OpenAIBatchPredictor:
    """The predictor of a job on an OpenAI batch file (task "openai-batch" after
    ``batch_file.resolve_job_format``).

    Args:
        config: the job's settings; reads ``model`` ("generate=M,embed=M", see ``_parse_models``),
            ``dtype``, ``device`` and ``input`` (the urls its lines name: the models to load).
        make_predictor: builds each sub-predictor in the worker, on its first request of that
            task: ``make_predictor(task, model, dtype, device)`` with task "generate" or "embed"
            and the worker's device; must pickle (a module-level function).

    Raises:
        UsageError: a bad ``--model`` spec or ``--dtype``.
    """
    from parainfer.models.dtype import check_dtype

    check_dtype(config.dtype)
    models = _parse_models(config.model)
    try:
        urls = urls_in(config.input) if config.input != "-" else set()
    except OSError:  # the source reports an unreadable file
        urls = set()
    needs = tuple(task for task, used in (("embed", EMBED in urls), ("generate", bool(urls & {CHAT, TEXT}))) if used)
    return OpenAIBatchPredictor(models, make_predictor, config.dtype, config.device, needs)


def _parse_models(spec: str | None) -> dict[str, str | None]:
    """``--model`` of a batch job: None, or "generate=DIR,embed=DIR" (either part optional).

    Raises:
        UsageError: a part that is not ``generate=...`` or ``embed=...``.
    """
    models: dict[str, str | None] = {"generate": None, "embed": None}
    for part in filter(None, (spec or "").split(",")):
        task, _, name = part.partition("=")
        if task.strip() not in models or not name.strip():
            raise UsageError(f"--model {spec!r} for an OpenAI batch job must be 'generate=MODEL,embed=MODEL' "
                             "(either part optional); default: the built-in models")
        models[task.strip()] = name.strip()
    return models


class OpenAIBatchPredictor(Predictor):
    """Answers batch request lines of any of ENDPOINTS on one worker.

    Args:
        models: ``{"generate": name or None, "embed": name or None}`` (see ``_parse_models``).
        make_predictor: builds a sub-predictor (see ``batch_file_predictor``).
        dtype, device: passed to ``make_predictor``; the worker sets ``device`` to its own GPU.

    Output per request: ``{"id", "custom_id", "response": {"status_code", "request_id",
    "body"}, "error": None}`` (the whole output row: ``writes_own_rows``).
    """

    task = BATCH_TASK
    writes_own_rows = True

    def __init__(self, models: dict[str, str | None] | None, make_predictor: MakePredictor, dtype: str = "auto",
                 device: str = "cpu", needs: tuple[str, ...] = ()):
        self.models = {"generate": None, "embed": None, **(models or {})}
        self.make_predictor, self.dtype, self.device, self.needs = make_predictor, dtype, device, needs
        # One model per endpoint: any ``model`` name is accepted, the served one reported (ModelNames).
        self.model_names = {task: ModelNames.of(task, self.models[task]) for task in ("generate", "embed")}
        self.names = {task: names.reported for task, names in self.model_names.items()}
        self._subs: dict[str, Any] = {}
        self._last_counts: tuple[list[Any], TokenCounts] | None = None

    def load(self) -> None:
        """Load the sub-predictors of ``needs`` (the tasks the file's urls name), so their load is
        the worker's start-up; any other loads when its first request arrives."""
        for task in self.needs:
            self.sub(task)
        phases: dict[str, float] = {}
        for sub in self._subs.values():
            for key, value in getattr(sub, "load_phases", {}).items():
                phases[key] = phases.get(key, 0.0) + value
        self.load_phases = phases

    @property
    def preload_modules(self) -> tuple[str, ...]:
        """The heavy modules of the sub-predictors of ``needs`` (``Predictor.preload_modules``),
        for the local executor's forkserver to import once for all workers, as for ``--task embed``;
        read in the driver, where they are built unloaded (cheap)."""
        modules: list[str] = []
        for task in self.needs:
            try:
                sub = self._subs.get(task) or self.make_predictor(task, self.models[task], self.dtype, self.device)
            except Exception:  # noqa: BLE001 - a model that cannot be built fails, with its reason, when loaded
                continue
            modules.extend(getattr(sub, "preload_modules", ()))
        return tuple(dict.fromkeys(modules))

    def sub(self, task: str) -> Any:
        """The loaded sub-predictor for "generate" or "embed" (the embedder holds the job's
        ``max_batch_tokens`` in its forward passes, as with ``--task embed``)."""
        if task not in self._subs:
            predictor = self.make_predictor(task, self.models[task], self.dtype, self.device)
            predictor.max_batch_tokens = self.max_batch_tokens
            predictor.load()
            self._subs[task] = predictor
        return self._subs[task]

    def token_lengths(self, texts: list[Any]) -> list[int]:
        """Cost estimate per request: characters / 4 of its body, plus max_tokens for generation."""
        out = []
        for req in texts:
            body = req.get("body") or {}
            new = 0 if req.get("url") == EMBED else body.get("max_completion_tokens") or body.get("max_tokens")
            if not isinstance(new, int):  # unset, or bad (the line's own 422 says so later)
                new = COMPLETION_DEFAULT_MAX_TOKENS if req.get("url") == TEXT else CHAT_DEFAULT_MAX_TOKENS
            out.append(len(json.dumps(body, ensure_ascii=False, default=str)) // 4 + 1 + max(0, min(new, 8192)))
        return out

    def token_counts(self, texts: list[Any]) -> TokenCounts:
        """The counts the last ``predict`` on this very list measured: the embedder's exact counts
        of every embedding input (padded as its forward passes computed them) plus, for
        generation, the prompt tokens (no padding: the engine batches sequences continuously) and
        the engine's prefill figures; else the base estimate."""
        if self._last_counts is not None and self._last_counts[0] is texts:
            return self._last_counts[1]
        return super().token_counts(texts)

    def predict(self, texts: list[Any]) -> list[dict[str, Any]]:
        """Answer B request lines ``{"custom_id", "method", "url", "body"}``; returns B result
        lines in order (see the module doc)."""
        lines: list[dict[str, Any] | None] = [None] * len(texts)
        embeds: list[tuple[int, EmbeddingRequest]] = []
        gens: list[_Generation] = []
        for pos, req in enumerate(texts):
            try:
                url, body = _parse_request(self, req)
                if url == EMBED:
                    embeds.append((pos, body))
                else:
                    gens.append(_prepare_generation(self, pos, url, body))
            except ApiError as e:
                lines[pos] = result_line(req["custom_id"], e.status, e.body())
        counts = TokenCounts()
        if embeds:
            counts.add(_run_embeddings(self, embeds, texts, lines))
        if gens:
            counts.add(_run_generation(self, gens, texts, lines))
        self._last_counts = (texts, counts)
        return lines  # type: ignore[return-value]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_subs": {}, "_last_counts": None}

    def describe(self) -> dict[str, Any]:
        return {"class": type(self).__name__, "task": self.task, "models": self.models, "dtype": self.dtype,
                "loaded_at_start": list(self.needs)}


@dataclass
class _Generation:
    """One generation request, prepared: one sequence per choice (``n`` per prompt,
    ``requests.expand_choices``), each with its prompt and SamplingParams."""

    pos: int
    url: str
    prompts: list[list[int]]
    params: list[Any]
    body: Any = None
    n: int = 1
    choices: list[Choice] = field(default_factory=list)


def _parse_request(predictor: OpenAIBatchPredictor, req: dict[str, Any]) -> tuple[str, Any]:
    """(url, validated body) of a request line; raises ApiError as the online route would (its
    ``model``, embedding inputs and ``dimensions`` too), plus 400 for a method other than POST, an
    unknown url, or ``stream``."""
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
        raise validation_error([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
    task = "embed" if url == EMBED else "generate"
    predictor.model_names[task].check(body.model)
    if url == EMBED:
        embedding_inputs(body.input)
        if body.dimensions is not None:
            check_dimensions(body.dimensions, predictor.sub("embed").matryoshka_dimensions(), predictor.names[task])
    if getattr(body, "stream", False):
        raise ApiError(400, "stream is not supported in a batch; leave it false", param="stream", code="unsupported")
    return url, body


def _prepare_generation(predictor: OpenAIBatchPredictor, pos: int, url: str, body: Any) -> _Generation:
    """Prompts and SamplingParams of a generation request, with the online route's checks."""
    check_supported(body)
    engine = predictor.sub("generate").engine
    if url == CHAT:
        try:
            prompts = [engine.format_chat(chat_messages(body), body.tools)]
        except ApiError:
            raise
        except Exception as exc:  # a template that rejects the roles/order given
            raise ApiError(400, f"the model's chat template rejected the messages: {exc}", param="messages",
                           code="invalid_messages") from None
    else:
        if body.echo:
            raise ApiError(400, "echo is not supported; leave it false", param="echo", code="unsupported")
        prompts = _completion_prompts(engine, body.prompt)
    params = sampling_params(engine, body, prompts)
    check_prompts_fit(engine, prompts, params.max_tokens)
    return _Generation(pos, url, *expand_choices(prompts, params, body.n), body, body.n)


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


def _run_generation(predictor: OpenAIBatchPredictor, gens: list[_Generation], requests: list[dict[str, Any]],
                    lines: list[Any]) -> TokenCounts:
    """Generate every prepared request's prompts in one engine call; fill their result lines.
    Returns the prompt tokens' counts (``OpenAIBatchPredictor.token_counts``)."""
    generator = predictor.sub("generate")
    engine = generator.engine
    flat = [(g, i, ids) for g in gens for i, ids in enumerate(g.prompts)]
    results = engine.generate([ids for _, _, ids in flat], [g.params[i] for g, i, _ in flat])
    for (g, i, _), res in zip(flat, results):
        g.choices.append(Choice(i, res.text, res.finish_reason, res.prompt_tokens, res.completion_tokens))
        if res.logprobs is not None:
            shape = chat_logprobs if g.url == CHAT else completion_logprobs
            g.choices[-1].logprobs = shape(engine.tokenizer, res.logprobs)
    name = predictor.names["generate"]
    for g in gens:
        if g.url == CHAT:
            apply_tool_calls(g.body, g.choices)
            body = chat_completion_body(completion_head("chat", name), g.choices, g.n)
        else:
            body = completion_body(completion_head("text", name), g.choices, g.n)
        lines[g.pos] = result_line(requests[g.pos]["custom_id"], 200, body)
    counts = generator.token_counts([])  # the engine's prefill figures since the last task
    prompts = TokenCounts.from_lengths([requests[g.pos] for g in gens], [sum(map(len, g.prompts[::g.n])) for g in gens],
                                       [False] * len(gens))
    prompts.padded = prompts.real  # continuous batching: sequences are not padded to each other
    counts.add(prompts)
    return counts


def _run_embeddings(predictor: OpenAIBatchPredictor, embeds: list[tuple[int, EmbeddingRequest]],
                    requests: list[dict[str, Any]], lines: list[Any]) -> TokenCounts:
    """Embed every embeddings request's inputs in one encoder call (the encoder sorts them by
    length and cuts its forward passes by padding and ``max_batch_tokens``, as for ``--task
    embed``); fill their result lines. Returns the encoder's counts of those inputs."""
    embedder = predictor.sub("embed")
    texts = [embedding_inputs(b.input) for _, b in embeds]
    flat = [t for group in texts for t in group]
    outputs = embedder.predict(flat)
    counts = embedder.token_counts(flat)
    window = embedder.window()
    lengths = [min(n, window) if window else n for n in embedder.token_lengths(flat)]
    start = 0
    for (pos, body), group in zip(embeds, texts):
        outs, tokens = outputs[start:start + len(group)], sum(lengths[start:start + len(group)])
        start += len(group)
        try:
            data = [{"object": "embedding", "index": j,
                     "embedding": encode_vector(out, body.encoding_format, j, body.dimensions)}
                    for j, out in enumerate(outs)]
        except ApiError as e:
            lines[pos] = result_line(requests[pos]["custom_id"], e.status, e.body())
            continue
        lines[pos] = result_line(requests[pos]["custom_id"], 200, embeddings_body(data, predictor.names["embed"], tokens))
    return counts
