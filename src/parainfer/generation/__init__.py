"""Text generation: continuous batching over a paged KV cache (nano-vllm style engine).

Files, one idea each: ``sequence`` (a request's state), ``sampling`` (SamplingParams and the
sampler), ``kv_cache`` (blocks and the cache tensor), ``scheduler`` (who prefills, who decodes,
preemption), ``attention`` + ``llama`` (the model forward over the paged cache),
``model_runner`` (batch -> inputs -> forward -> tokens), ``engine`` (the step loop and the
public API), ``loop`` (a background thread for servers), ``model_store`` (SmolLM2 offline, GGUF files:
``resolve_model``, ``load_gguf``).
"""

from parainfer.generation.engine import LLMEngine
from parainfer.generation.engine_config import EngineConfig
from parainfer.generation.loop import EngineLoop
from parainfer.generation.model_store import ensure_smollm2, load_gguf, resolve_model
from parainfer.generation.outputs import GenerationResult, RequestOutput
from parainfer.generation.sampling_params import SamplingParams

__all__ = [
    "EngineConfig",
    "EngineLoop",
    "GenerationResult",
    "LLMEngine",
    "RequestOutput",
    "SamplingParams",
    "ensure_smollm2",
    "load_gguf",
    "resolve_model",
]
