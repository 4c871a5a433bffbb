"""The one place that builds a generation engine from its name (``--engine``).

``build_engine(name, model, **settings)`` returns a ``engine_contract.GenerationEngine``:
"parainfer" (the own ``LLMEngine``), "llamacpp" (``llamacpp_engine.LlamaCppEngine``: GGUF files
through llama-cpp-python), "vllm" (``vllm_engine.VllmEngine``, on a GPU), "auto"
(``resolve_engine``), or "module:callable" (your own engine class, called as
``callable(model, **settings)``; importable in the workers too, as for ``--model module:function``). ``load_tokenizer`` gives the tokenizer alone, for a driver or a server
whose engines live in workers. The engine packages are imported only when picked.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from parainfer.errors import UsageError
from parainfer.generation.engine_contract import LLAMACPP_HINT, VLLM_HINT

ENGINES = ("parainfer", "llamacpp", "vllm", "auto")
_PACKAGES = {"llamacpp": ("llama_cpp", LLAMACPP_HINT), "vllm": ("vllm", VLLM_HINT)}


def check_engine(name: str) -> str:
    """``name`` lower-cased when it is one of ENGINES; a "module:callable" as it is.

    Raises:
        UsageError: any other name.
    """
    key = (name or "").strip()
    if ":" in key and all(part.strip() for part in key.split(":", 1)):
        return key  # module:callable, imported where the engine is built
    if key.lower() not in ENGINES:
        raise UsageError(f"unknown --engine {name!r}; accepted: {', '.join(ENGINES)} or module:callable")
    return key.lower()


def is_gguf(model: str | Path | None) -> bool:
    """True for a path to a ``.gguf`` file."""
    from parainfer.generation.model_store import is_gguf_path

    return model is not None and is_gguf_path(model) and Path(model).is_file()


def resolve_engine(name: str, model: str | Path | None, device: str = "cpu") -> str:
    """The engine that ``name`` means for ``model`` on ``device``.

    "auto": "llamacpp" for a .gguf file when ``llama_cpp`` is importable, else "parainfer"; for
    anything else "vllm" on a CUDA device when ``vllm`` is importable, else "parainfer". Other
    names are returned as they are, once their package is found importable.

    Raises:
        UsageError: an unknown name; "llamacpp" or "vllm" without its package (one line saying
            what to install).
    """
    name = check_engine(name)
    if name in _PACKAGES:
        package, hint = _PACKAGES[name]
        if importlib.util.find_spec(package) is None:
            raise UsageError(hint)
        return name
    if name != "auto":
        return name
    if is_gguf(model):
        return "llamacpp" if importlib.util.find_spec("llama_cpp") is not None else "parainfer"
    if device.startswith("cuda") and importlib.util.find_spec("vllm") is not None:
        return "vllm"
    return "parainfer"


def model_path(model: str | Path | None) -> Path:
    """The HF directory the own engine (or vLLM) loads for ``model``
    (``model_store.resolve_model``: None or "default" the built-in SmolLM2-135M-Instruct, a
    .gguf file its dequantised directory)."""
    from parainfer.generation.model_store import resolve_model

    return resolve_model(model)


def llamacpp_model(model: str | Path | None) -> str | Path:
    """``model`` for ``--engine llamacpp``, which reads the file itself.

    Raises:
        UsageError: no model given (llama.cpp has no built-in model).
    """
    if model in (None, "default"):
        raise UsageError("--engine llamacpp needs --model FILE.gguf (a GGUF model file)")
    return model


def build_engine(name: str, model: str | Path | None, device: str = "cpu", **settings: Any) -> Any:
    """Load ``model`` into the engine ``name`` (resolved by ``resolve_engine``).

    Args:
        name: one of ENGINES.
        model: a model directory or file (None: the built-in model; llamacpp needs a .gguf file).
        device: where the model runs ("cpu" | "cuda[:i]"); used by "auto".
        settings: ``EngineConfig`` fields (dtype, max_num_seqs, threads, enable_prefix_caching,
            deterministic, grammar, ...).

    Returns:
        A loaded ``engine_contract.GenerationEngine``.

    Raises:
        UsageError: an unknown name; an engine whose package is missing (one line saying what to
            install); a model that engine cannot load.
    """
    engine = resolve_engine(name, model, device)
    if ":" in engine:
        return _custom(engine)(model, **settings)
    if engine == "llamacpp":
        from parainfer.generation.llamacpp_engine import LlamaCppEngine

        return LlamaCppEngine(llamacpp_model(model), **settings)
    if engine == "vllm":
        from parainfer.generation.vllm_engine import VllmEngine

        return VllmEngine(model_path(model), **settings)
    from parainfer.generation.engine import LLMEngine

    return LLMEngine(model_path(model), **settings)


def load_tokenizer(name: str, model: str | Path | None, device: str = "cpu") -> Any:
    """The tokenizer engine ``name`` uses for ``model`` (see ``engine_contract``), without the
    weights: llama.cpp's for "llamacpp" (the GGUF's vocabulary alone), a "module:callable"
    engine's own ``load_tokenizer(model)`` when it has one, else Hugging Face's.

    Raises:
        UsageError: as ``build_engine``.
    """
    engine = resolve_engine(name, model, device)
    if ":" in engine and hasattr(_custom(engine), "load_tokenizer"):
        return _custom(engine).load_tokenizer(model)
    if engine == "llamacpp":
        from parainfer.generation.llamacpp_engine import LlamaCppTokenizer, load_model

        return LlamaCppTokenizer(load_model(llamacpp_model(model), vocab_only=True))
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path(model))


def _custom(spec: str) -> Any:
    """The callable named by "module:callable".

    Raises:
        UsageError: the module or the name cannot be imported.
    """
    import importlib

    module, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module.strip()), attr.strip())
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"--engine {spec!r}: cannot import it ({exc}); accepted: {', '.join(ENGINES)} "
                         "or an importable module:callable") from None
