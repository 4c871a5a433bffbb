"""``openai-batch``: one predictor that answers OpenAI batch request lines of every endpoint.

Each worker holds two sub-predictors, loaded on first use: an embedder (``/v1/embeddings``)
and a generator (``/v1/chat/completions``, ``/v1/completions``). ``predict`` takes a task's
request lines (``io.openai_batch``), checks each against the serving request schemas, runs
all embedding inputs in one encoder call and all generation prompts together in the
continuous-batching engine (per-line sampling parameters), and returns one OpenAI batch
result line per request, whose ``body`` is built by ``serving.bodies`` exactly as
``parainfer serve`` builds it. A request that cannot be served (unknown url or model, a bad
or unsupported option, a prompt over the context window) gets its error body with the status
the online endpoint would give (400, or 422 for a field of the wrong type).
"""

from __future__ import annotations

import json
from typing import Any

from parainfer.errors import UsageError
from parainfer.openai.batch_file import BATCH_TASK, ENDPOINTS
from parainfer.models.base import Predictor

CHAT, TEXT, EMBED = ENDPOINTS


def parse_models(spec: str | None) -> dict[str, str | None]:
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
        models: ``{"generate": name or None, "embed": name or None}`` (see ``parse_models``).
        dtype, device: as for the sub-predictors.

    Output per request: ``{"id", "custom_id", "response": {"status_code", "request_id",
    "body"}, "error": None}`` (the whole output row: ``writes_own_rows``).
    """

    task = BATCH_TASK
    writes_own_rows = True

    def __init__(self, models: dict[str, str | None] | None = None, dtype: str = "auto", device: str = "cpu"):
        from parainfer.serving.config import ServeConfig

        self.models = {"generate": None, "embed": None, **(models or {})}
        self.dtype, self.device = dtype, device
        self.names = {task: ServeConfig(task=task, model=self.models[task]).served_model_name()  # type: ignore[arg-type]
                      for task in ("generate", "embed")}
        self._subs: dict[str, Any] = {}

    def load(self) -> None:
        """Nothing up front: each sub-predictor loads when its first request arrives."""

    def sub(self, task: str) -> Any:
        """The loaded sub-predictor for "generate" or "embed"."""
        if task not in self._subs:
            from parainfer.models.registry import build_predictor

            predictor = build_predictor(task, self.models[task], self.dtype, self.device)
            predictor.load()
            self._subs[task] = predictor
        return self._subs[task]

    def accepts_model(self, task: str, model: str) -> bool:
        """True for "" (unset), the served name (any case), "default", or the --model given."""
        known = {"", "default", self.names[task].lower(), str(self.models[task] or "").lower()}
        if task == "generate":
            known.add("smollm2-135m-instruct")
        return model.lower() in known

    def token_lengths(self, texts: list[Any]) -> list[int]:
        """Cost estimate per request: characters / 4 of its body, plus max_tokens for generation."""
        out = []
        for req in texts:
            body = req.get("body") or {}
            new = 0 if req.get("url") == EMBED else body.get("max_completion_tokens") or body.get("max_tokens")
            if not isinstance(new, int):  # unset, or bad (the line's own 422 says so later)
                new = 16 if req.get("url") == TEXT else 256
            out.append(len(json.dumps(body, ensure_ascii=False, default=str)) // 4 + 1 + max(0, min(new, 8192)))
        return out

    def predict(self, texts: list[Any]) -> list[dict[str, Any]]:
        """Answer B request lines; returns B result lines in order (see the module doc)."""
        from parainfer.openai.batch_run import answer_requests

        return answer_requests(self, texts)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_subs": {}}

    def describe(self) -> dict[str, Any]:
        return {"class": type(self).__name__, "task": self.task, "models": self.models, "dtype": self.dtype}
