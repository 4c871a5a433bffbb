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
# Rows of every GEMM when the plain calls fail the probe (``linear.Linear.row_chunk``). Measured
# on an AMX Xeon (64 prompts, 8 greedy tokens, room for 32, deterministic / not): 8 rows 0.58x,
# 16 rows 0.72x, 32 rows 0.76x (noisy, load 2-3); 16 keeps most of that without padding a
# lone decode row to 32 (docs/benchmarks.md, "Deterministic mode").
ROW_CHUNK = 16


def batch_invariance(model: DecoderForward, config: EngineConfig) -> dict[str, Any]:
    """Whether a greedy request's tokens are independent of the running batch, and why (for
    /health and the engine's users): {"deterministic": bool, "mode": str, "reason": str}.

    Not asked (``config.deterministic`` False): False. Else ``EngineConfig.deterministic`` pins
    attention, chunking and the prefix cache, and this probe runs the row-wise layers whose
    kernels see the batch's row count (the first layer's RMSNorm and q/k/v, MLP down and LM head
    projections) on seeded random rows at ``PROBE_ROWS`` counts and shifted positions: every row
    must get the same bits everywhere. Where a library picks GEMM kernels by row count (oneDNN
    and MKL on an AMX Xeon), every GEMM of the model is switched to exactly ``ROW_CHUNK`` rows
    (``Linear.row_chunk``: one GEMM shape, so one kernel) and probed again; the engine then
    computes with that setting. A sample of shapes, not a proof (docs/generation.md,
    "Deterministic mode").
    """
    if not config.deterministic:
        return {"deterministic": False, "mode": "free", "reason": "not asked (--no-deterministic): decode "
                "attention is padded to the batch's longest context, prefill chunks follow the budget others "
                "leave, and prefix-cache hits change how a prompt is computed"}
    failure = _row_check(model)
    mode = "per-sequence-attention"
    if failure is not None:  # try every GEMM at a fixed row count (linear.Linear.row_chunk)
        _set_row_chunk(model, ROW_CHUNK)
        second = _row_check(model)
        if second is not None:
            _set_row_chunk(model, 0)
            return {"deterministic": False, "mode": mode,
                    "reason": f"{failure}, and {second} with every GEMM at {ROW_CHUNK} rows"}
        mode = f"per-sequence-attention, GEMMs of {ROW_CHUNK} rows"
        layers_note = (f"{failure}, so every GEMM runs on exactly {ROW_CHUNK} rows (zero-padded), which gave "
                       f"each row the same bits at every row count and position")
    else:
        layers_note = f"the row-wise layers gave the same bits at {', '.join(map(str, PROBE_ROWS))} rows"
    return {"deterministic": True, "mode": mode,
            "reason": f"decode rows attend alone over their own keys, prefill chunks end at multiples of "
                      f"{config.deterministic_chunk} tokens, prefix cache off, and {layers_note}"}


def _linears(model: DecoderForward) -> list[Any]:
    return [model.lm_head, *(getattr(layer, name) for layer in model.layers
                             for name in ("qkv", "o", "gate_up", "down"))]


def _set_row_chunk(model: DecoderForward, rows: int) -> None:
    for linear in _linears(model):
        linear.row_chunk = rows


def _row_check(model: DecoderForward) -> str | None:
    """None when the first layer's RMSNorm, q/k/v and MLP down projections and the LM head give
    every one of ``max(PROBE_ROWS)`` seeded random rows the same bits computed with fewer rows
    (``PROBE_ROWS``) and at other positions among other rows (rolled by 1, 3 and 5); else what
    differed."""
    layer = model.layers[0]
    gen = torch.Generator().manual_seed(0)
    checks = [("rms_norm", lambda x: model._rms_norm(x, layer.ln1), layer.qkv.in_features),
              ("qkv", layer.qkv, layer.qkv.in_features), ("down", layer.down, layer.down.in_features),
              ("lm_head", model.lm_head, model.lm_head.in_features)]
    top = max(PROBE_ROWS)
    with torch.inference_mode():
        for name, fn, width in checks:
            x = torch.randn(top, width, generator=gen).to(model.dtype)
            full = fn(x)
            for rows in PROBE_ROWS[:-1]:
                if not torch.equal(fn(x[:rows]), full[:rows]):
                    return (f"the {name} layer gave a row other bits at {rows} rows than at {top} "
                            f"(this CPU/library picks kernels by row count)")
            for shift in (1, 3, 5):
                order = torch.roll(torch.arange(top), shift)
                if not torch.equal(fn(x[order]), full[order]):
                    return f"the {name} layer gave a row other bits at another position in the batch"
    return None
