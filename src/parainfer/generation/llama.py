"""A Llama-family decoder forward in plain PyTorch, over a flat (padding-free) token batch.

Reads the weights of a Hugging Face ``*ForCausalLM`` of one of the architectures in ``ARCHS``
(Llama, Mistral, Qwen2/2.5, Qwen3: the same layout with small differences read from
config.json, see :class:`Arch`) and computes exactly what HF computes (Touvron et al.
2023, https://arxiv.org/abs/2302.13971): token embedding; per layer RMSNorm -> attention
(Qwen2: q/k/v biases; Qwen3: a per-head RMSNorm on q and k before rotation; Mistral: a sliding
window over the keys) with rotary position embeddings (cos/sin tables taken from HF's own
rotary module, so rope_theta and any rope scaling match) and grouped-query heads -> residual -> RMSNorm -> SiLU-gated MLP
-> residual; final RMSNorm; tied or separate LM head. Two fusions cut per-layer op count:
q/k/v projections are one matmul, gate/up projections are one matmul; weights are prepacked
for oneDNN (:mod:`parainfer.generation.linear`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from parainfer.errors import UsageError
from parainfer.generation.attention import AttentionMetadata, paged_attention
from parainfer.generation.kv_cache import KVCache
from parainfer.generation.linear import Linear


@dataclass(frozen=True)
class Arch:
    """What one architecture (a config.json ``model_type``) changes in the shared forward.

    Attributes:
        qkv_bias: q/k/v projections may carry biases (loaded when the weights have them: Qwen2
            always, Llama and Qwen3 with ``attention_bias=True``).
        qk_norm: a per-head RMSNorm (over head_dim, own weights per layer) on queries and keys
            before the rotary embedding (Qwen3, https://arxiv.org/abs/2505.09388).
        sliding_window: the config's ``sliding_window`` limits attention to the last W keys
            (Mistral, Jiang et al. 2023, https://arxiv.org/abs/2310.06825); for the Qwen types
            the window is used only when ``use_sliding_window`` is set, which is refused.
    Rope theta/scaling, the norm epsilon (``rms_norm_eps``), head_dim and tied embeddings are
    read from the config (the rotary tables come from HF's own rotary module, the LM head from
    HF's tied or separate weight).
    """

    qkv_bias: bool = False
    qk_norm: bool = False
    sliding_window: bool = False


ARCHS: dict[str, Arch] = {
    "llama": Arch(qkv_bias=True),  # attention_bias=True checkpoints exist
    "mistral": Arch(sliding_window=True),
    "qwen2": Arch(qkv_bias=True),
    "qwen3": Arch(qk_norm=True, qkv_bias=True),  # attention_bias is False in released Qwen3
}
SUPPORTED_MODEL_TYPES = tuple(ARCHS)


@dataclass
class _Layer:
    ln1: torch.Tensor  # [hidden]
    q_norm: torch.Tensor | None  # [head_dim] (Arch.qk_norm) or None
    k_norm: torch.Tensor | None
    qkv: Linear  # hidden -> (H + 2 KV) * D
    o: Linear  # H * D -> hidden
    ln2: torch.Tensor
    gate_up: Linear  # hidden -> 2 * intermediate
    down: Linear  # intermediate -> hidden


class DecoderForward:
    """Weights plus forward pass of every architecture in ``ARCHS``. Holds no HF module after
    construction.

    Args:
        hf_model: a loaded HF ``*ForCausalLM`` of a type in ``SUPPORTED_MODEL_TYPES``.
        dtype: compute and weight dtype (torch.float32 or torch.bfloat16).
        max_positions: length of the rotary tables (the engine's max_model_len).
        pack: prepack linear weights for oneDNN (see :mod:`parainfer.generation.linear`).

    Raises:
        UsageError: the model type (the error names it and the supported ones) or its
            activation/attention options are not supported.

    Attributes (besides the weights): ``model_type``; ``sliding_window``: W, each query attends
    to the keys of its last W positions (itself included), or None for full causal attention.
    """

    def __init__(self, hf_model: Any, dtype: torch.dtype, max_positions: int, pack: bool = True) -> None:
        cfg = hf_model.config
        self.arch = _check_supported(cfg)
        self.model_type = cfg.model_type
        self.sliding_window = getattr(cfg, "sliding_window", None) if self.arch.sliding_window else None
        self.dtype = dtype
        self.num_layers = cfg.num_hidden_layers
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = getattr(cfg, "num_key_value_heads", None) or self.num_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.num_heads
        self.eps = cfg.rms_norm_eps
        inner = hf_model.model
        w = lambda t: t.detach().to(dtype).contiguous()  # noqa: E731
        self.embed = w(inner.embed_tokens.weight)
        self.norm = w(inner.norm.weight)
        self.lm_head = Linear(w(hf_model.lm_head.weight), None, pack)
        self.layers = [self._layer(layer, w, pack) for layer in inner.layers]
        self.cos, self.sin_signed = self._rope_tables(inner.rotary_emb, max_positions)

    def _layer(self, layer: Any, w: Any, pack: bool) -> _Layer:
        att, mlp = layer.self_attn, layer.mlp
        qkv_bias = None
        if self.arch.qkv_bias and att.q_proj.bias is not None:
            qkv_bias = w(torch.cat([att.q_proj.bias, att.k_proj.bias, att.v_proj.bias]))
        o_bias = None if att.o_proj.bias is None else w(att.o_proj.bias)
        q_norm = k_norm = None
        if self.arch.qk_norm:
            q_norm, k_norm = w(att.q_norm.weight), w(att.k_norm.weight)
        return _Layer(
            ln1=w(layer.input_layernorm.weight),
            q_norm=q_norm,
            k_norm=k_norm,
            qkv=Linear(w(torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight])), qkv_bias, pack),
            o=Linear(w(att.o_proj.weight), o_bias, pack),
            ln2=w(layer.post_attention_layernorm.weight),
            gate_up=Linear(w(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])), None, pack),
            down=Linear(w(mlp.down_proj.weight), None, pack),
        )

    def _rope_tables(self, rotary: Any, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos [n, D] and sign-folded sin [n, D] (first half negated) from HF's rotary module.

        With ``sin_signed``, HF's ``x * cos + rotate_half(x) * sin`` becomes
        ``x * cos + swap_halves(x) * sin_signed``, the same floats with one op fewer.
        """
        probe = torch.zeros(1, dtype=torch.float32)
        cos, sin = rotary(probe, torch.arange(n).unsqueeze(0))
        cos, sin = cos[0].to(self.dtype), sin[0].to(self.dtype)
        half = self.head_dim // 2
        sin_signed = torch.cat([-sin[:, :half], sin[:, half:]], dim=-1)
        return cos.contiguous(), sin_signed.contiguous()

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        meta: AttentionMetadata,
        kv_cache: KVCache,
        logit_rows: torch.Tensor,
    ) -> torch.Tensor:
        """Run the step's tokens through the model.

        Args:
            input_ids: [T] int64 token ids (decode rows first, then prefill rows).
            positions: [T] int64 position of each token in its sequence.
            meta: cache slots and row grouping (see :class:`AttentionMetadata`).
            kv_cache: the paged cache, written in place.
            logit_rows: [B] row indices whose logits are wanted (the last row of each sequence).

        Returns:
            [B, vocab] logits (in ``self.dtype``).
        """
        x = F.embedding(input_ids, self.embed)
        cos = self.cos[positions].unsqueeze(1)
        sin = self.sin_signed[positions].unsqueeze(1)
        for i, layer in enumerate(self.layers):
            x = self._layer_forward(x, layer, cos, sin, meta, kv_cache.layer(i))
        if logit_rows.numel() == 0:  # only partial prefill chunks this step: nothing to sample
            return x.new_empty((0, self.lm_head.out_features))
        x = self._rms_norm(x[logit_rows], self.norm)
        return self.lm_head(x)

    def _layer_forward(self, x, layer: _Layer, cos, sin, meta, kv_layer) -> torch.Tensor:
        t = x.shape[0]
        h, kv, d = self.num_heads, self.num_kv_heads, self.head_dim
        qkv = layer.qkv(self._rms_norm(x, layer.ln1))
        qk = qkv[:, : (h + kv) * d].view(t, h + kv, d)
        if layer.q_norm is not None:  # Qwen3: per-head RMSNorm of q and k, before rotation
            qk = torch.cat([self._rms_norm(qk[:, :h], layer.q_norm), self._rms_norm(qk[:, h:], layer.k_norm)], 1)
        swapped = qk.view(t, h + kv, 2, d // 2).flip(2).view(t, h + kv, d)
        qk = qk * cos + swapped * sin
        v = qkv[:, (h + kv) * d :].view(t, kv, d)
        attn = paged_attention(qk[:, :h], qk[:, h:], v, kv_layer, meta)
        x = x + layer.o(attn)
        gate, up = layer.gate_up(self._rms_norm(x, layer.ln2)).chunk(2, dim=-1)
        return x + layer.down(F.silu(gate) * up)

    def _rms_norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """HF's LlamaRMSNorm: computed in fp32, cast back, then scaled (Zhang & Sennrich 2019)."""
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * xf.to(x.dtype)


# Kept for callers of the first (Llama-only) name.
LlamaForward = DecoderForward


def _check_supported(cfg: Any) -> Arch:
    """The :class:`Arch` of ``cfg.model_type``; UsageError naming an unsupported type or option."""
    model_type = getattr(cfg, "model_type", None)
    if model_type not in ARCHS:
        raise UsageError(
            f"the generation engine does not support model_type {model_type!r}; supported: "
            f"{', '.join(SUPPORTED_MODEL_TYPES)} (docs/generation.md, 'Architectures')"
        )
    if getattr(cfg, "use_sliding_window", False) and model_type != "mistral":
        raise UsageError(f"{model_type} with use_sliding_window=True (a window on some layers only) is not supported")
    act = getattr(cfg, "hidden_act", "silu")
    if act != "silu":
        raise UsageError(f"hidden_act must be 'silu' for the generation engine, got {act!r}")
    if getattr(cfg, "mlp_bias", False):
        raise UsageError("models with MLP biases (mlp_bias=True) are not supported")
    return ARCHS[model_type]
