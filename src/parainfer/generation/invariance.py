"""Deterministic generation: does a sequence's computation depend on the rest of the batch?

``EngineConfig.deterministic`` pins what the engine controls (decode attention per sequence,
fixed prefill chunk ends, no prefix-cache hits); ``batch_invariance`` probes what it does not:
the kernels of the row-wise layers, which a library may pick by the step's row count.
"""

from __future__ import annotations

from typing import Any

import torch

from parainfer.generation.engine_config import EngineConfig
from parainfer.generation.llama import DecoderForward

# Row counts the generation probe runs the row-wise layers at (a step's rows: 1 decode row up to a
# prefill chunk); each row must get the same bits at every count.
PROBE_ROWS = (1, 2, 3, 8, 17, 64)


def batch_invariance(model: DecoderForward, config: EngineConfig) -> dict[str, Any]:
    """Whether a greedy request's tokens are independent of the running batch, and why (for
    /health and the engine's users): {"deterministic": bool, "mode": str, "reason": str}.

    Not asked (``config.deterministic`` False): False. Else ``EngineConfig.deterministic`` pins
    attention, chunking and the prefix cache, and this probe runs the row-wise layers whose
    kernels see the batch's row count (the first layer's RMSNorm and q/k/v, MLP down and LM head
    projections) on seeded random rows at ``PROBE_ROWS`` counts: every row must get the same bits
    at every count. A sample of shapes, not a proof (docs/generation.md, "Deterministic mode").
    """
    if not config.deterministic:
        return {"deterministic": False, "mode": "free", "reason": "not asked (--no-deterministic): decode "
                "attention is padded to the batch's longest context, prefill chunks follow the budget others "
                "leave, and prefix-cache hits change how a prompt is computed"}
    layer = model.layers[0]
    gen = torch.Generator().manual_seed(0)
    checks = [("rms_norm", lambda x: model._rms_norm(x, layer.ln1), layer.qkv.in_features),
              ("qkv", layer.qkv, layer.qkv.in_features), ("down", layer.down, layer.down.in_features),
              ("lm_head", model.lm_head, model.lm_head.in_features)]
    with torch.inference_mode():
        for name, fn, width in checks:
            x = torch.randn(max(PROBE_ROWS), width, generator=gen).to(model.dtype)
            full = fn(x)
            for rows in PROBE_ROWS[:-1]:
                if not torch.equal(fn(x[:rows]), full[:rows]):
                    return {"deterministic": False, "mode": "per-sequence-attention",
                            "reason": f"the {name} layer gave a row other bits at {rows} rows than at "
                                      f"{max(PROBE_ROWS)} (this CPU/library picks kernels by row count)"}
    return {"deterministic": True, "mode": "per-sequence-attention",
            "reason": f"decode rows attend alone over their own keys, prefill chunks end at multiples of "
                      f"{config.deterministic_chunk} tokens, prefix cache off, and the row-wise layers gave "
                      f"the same bits at {', '.join(map(str, PROBE_ROWS))} rows"}
