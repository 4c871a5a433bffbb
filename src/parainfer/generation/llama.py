"""A Llama-family decoder forward in plain PyTorch, over a flat (padding-free) token batch.

Reads the weights of a Hugging Face ``*ForCausalLM`` of one of the architectures in ``ARCHS``
(Llama, Mistral, Qwen2/2.5, Qwen3, Gemma 3: the same layout with differences read from
config.json, see :class:`Arch`) and computes exactly what HF computes (Touvron et al.
2023, https://arxiv.org/abs/2302.13971): token embedding; per layer RMSNorm -> attention
(Qwen2: q/k/v biases; Qwen3: a per-head RMSNorm on q and k before rotation; Mistral: a sliding
window over the keys) with rotary position embeddings (cos/sin tables taken from HF's own
rotary module, so rope_theta and any rope scaling match) and grouped-query heads -> residual -> RMSNorm -> SiLU-gated MLP
-> residual; final RMSNorm; tied or separate LM head. Gemma 3 (Gemma Team 2025,
https://arxiv.org/abs/2503.19786; HF ``modeling_gemma3``) adds: the embedding scaled by
sqrt(hidden), RMSNorm scaling by (1 + weight) in fp32, norms after attention and after the MLP
as well as before, per-layer sliding-window or global attention (``config.layer_types``) with
each kind's own rotary tables (local rope theta), a tanh-GELU gated MLP, the attention scale
``query_pre_attn_scalar ** -0.5``, and tanh soft-capping of the final logits when the config
sets ``final_logit_softcapping``. ``attn_logit_softcapping`` is ignored, as HF's Gemma 3
attention ignores it (released Gemma 3 configs set it to null; Gemma 2 used it). Two fusions cut per-layer op count:
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
            the window is used only when ``use_sliding_window`` is set, which is refused. With
            ``gemma`` the window applies only to the layers ``config.layer_types`` marks
            "sliding_attention".
        gemma: the Gemma 3 differences listed in the module docstring.
    Rope theta/scaling, the norm epsilon (``rms_norm_eps``), head_dim and tied embeddings are
    read from the config (the rotary tables come from HF's own rotary module, the LM head from
    HF's tied or separate weight).
    """

    qkv_bias: bool = False
    qk_norm: bool = False
    sliding_window: bool = False
    gemma: bool = False


# gemma: Gemma 3 (HF ``Gemma3ForCausalLM``, config ``gemma3_text``): scaled embedding, (1 + w)
# RMSNorm, post-attention and post-MLP norms, q/k norms, per-layer window from
# ``config.layer_types`` with per-type rope tables, gelu_pytorch_tanh MLP,
# ``query_pre_attn_scalar``, optional final logit soft-capping.
ARCHS: dict[str, Arch] = {
    "llama": Arch(qkv_bias=True),  # attention_bias=True checkpoints exist
    "mistral": Arch(sliding_window=True),
    "qwen2": Arch(qkv_bias=True),
    "qwen3": Arch(qk_norm=True, qkv_bias=True),  # attention_bias is False in released Qwen3
    "gemma3_text": Arch(qkv_bias=True, qk_norm=True, sliding_window=True, gemma=True),
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
    post_attn: torch.Tensor | None = None  # Gemma: norm of the attention output, before the residual
    post_mlp: torch.Tensor | None = None  # Gemma: norm of the MLP output, before the residual
    window: int | None = None  # this layer's sliding window (None: global attention)
    rope: str = "default"  # key of this layer's rotary tables in DecoderForward.rope


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

    Attributes (besides the weights): ``model_type``; ``sliding_window``: W, each query of a
    windowed layer attends to the keys of its last W positions (itself included), or None for
    full causal attention; ``layer_windows``: per layer, W or None (Gemma 3 interleaves
    windowed and global layers; the runner then also builds the global layers' metadata).
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
        gemma = self.arch.gemma
        # Gemma: softmax scale query_pre_attn_scalar ** -0.5 (None: SDPA's 1 / sqrt(head_dim)).
        self.attn_scale = cfg.query_pre_attn_scalar ** -0.5 if gemma else None
        self.final_softcap = getattr(cfg, "final_logit_softcapping", None) if gemma else None
        inner = hf_model.model
        w = lambda t: t.detach().to(dtype).contiguous()  # noqa: E731
        # Gemma's RMSNorm scales by (1 + weight) in fp32 (HF Gemma3RMSNorm); kept as that fp32 factor.
        nw = (lambda t: 1.0 + w(t).float()) if gemma else w  # noqa: E731
        self._nw = nw
        self.embed = w(inner.embed_tokens.weight)
        # Gemma: the embedding times sqrt(hidden), rounded to the weights' dtype as HF does.
        self.embed_scale = (torch.tensor(float(inner.embed_tokens.scalar_embed_scale)).to(dtype)
                            if gemma else None)
        self.norm = nw(inner.norm.weight)
        self.lm_head = Linear(w(hf_model.lm_head.weight), None, pack)
        layer_types = list(getattr(cfg, "layer_types", None) or []) if gemma else []
        self.layers = [self._layer(layer, w, pack, layer_types[i] if layer_types else None)
                       for i, layer in enumerate(inner.layers)]
        self.layer_windows = tuple(layer.window for layer in self.layers)
        self.rope = {kind: self._rope_tables(inner.rotary_emb, max_positions, None if kind == "default" else kind)
                     for kind in sorted({layer.rope for layer in self.layers})}
        self.cos, self.sin_signed = self.rope[self.layers[0].rope]

    def _layer(self, layer: Any, w: Any, pack: bool, layer_type: str | None) -> _Layer:
        att, mlp = layer.self_attn, layer.mlp
        nw = self._nw
        qkv_bias = None
        if self.arch.qkv_bias and att.q_proj.bias is not None:
            qkv_bias = w(torch.cat([att.q_proj.bias, att.k_proj.bias, att.v_proj.bias]))
        o_bias = None if att.o_proj.bias is None else w(att.o_proj.bias)
        q_norm = k_norm = None
        if self.arch.qk_norm:
            q_norm, k_norm = nw(att.q_norm.weight), nw(att.k_norm.weight)
        gemma = self.arch.gemma
        if gemma:
            window = self.sliding_window if layer_type == "sliding_attention" else None
        else:
            window = self.sliding_window
        return _Layer(
            ln1=nw(layer.input_layernorm.weight),
            q_norm=q_norm,
            k_norm=k_norm,
            qkv=Linear(w(torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight])), qkv_bias, pack),
            o=Linear(w(att.o_proj.weight), o_bias, pack),
            ln2=nw(layer.pre_feedforward_layernorm.weight if gemma else layer.post_attention_layernorm.weight),
            gate_up=Linear(w(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])), None, pack),
            down=Linear(w(mlp.down_proj.weight), None, pack),
            post_attn=nw(layer.post_attention_layernorm.weight) if gemma else None,
            post_mlp=nw(layer.post_feedforward_layernorm.weight) if gemma else None,
            window=window,
            rope=layer_type or "default",
        )

    def _rope_tables(self, rotary: Any, n: int, layer_type: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """cos [n, D] and sign-folded sin [n, D] (first half negated) from HF's rotary module
        (Gemma 3: the tables of ``layer_type``, each kind of layer has its own rope theta).

        With ``sin_signed``, HF's ``x * cos + rotate_half(x) * sin`` becomes
        ``x * cos + swap_halves(x) * sin_signed``, the same floats with one op fewer.
        """
        probe = torch.zeros(1, dtype=torch.float32)
        positions = torch.arange(n).unsqueeze(0)
        cos, sin = rotary(probe, positions) if layer_type is None else rotary(probe, positions, layer_type)
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
            meta: cache slots and row grouping (see :class:`AttentionMetadata`); for a model
                whose layers mix windowed and global attention (Gemma 3), the windowed layers'
                metadata, ``meta.global_layers`` the global layers'.
            kv_cache: the paged cache, written in place.
            logit_rows: [B] row indices whose logits are wanted (the last row of each sequence).

        Returns:
            [B, vocab] logits (in ``self.dtype``).
        """
        x = F.embedding(input_ids, self.embed)
        if self.embed_scale is not None:
            x = x * self.embed_scale
        tables = {kind: (cos[positions].unsqueeze(1), sin[positions].unsqueeze(1))
                  for kind, (cos, sin) in self.rope.items()}
        for i, layer in enumerate(self.layers):
            layer_meta = meta
            if layer.window is None and meta.sliding_window is not None:
                layer_meta = meta.global_layers
            cos, sin = tables[layer.rope]
            x = self._layer_forward(x, layer, cos, sin, layer_meta, kv_cache.layer(i))
        if logit_rows.numel() == 0:  # only partial prefill chunks this step: nothing to sample
            return x.new_empty((0, self.lm_head.out_features))
        x = self._rms_norm(x[logit_rows], self.norm)
        logits = self.lm_head(x)
        if self.final_softcap is not None:  # Gemma: cap * tanh(logits / cap)
            logits = torch.tanh(logits / self.final_softcap) * self.final_softcap
        return logits

    def _layer_forward(self, x, layer: _Layer, cos, sin, meta, kv_layer) -> torch.Tensor:
        t = x.shape[0]
        h, kv, d = self.num_heads, self.num_kv_heads, self.head_dim
        qkv = layer.qkv(self._rms_norm(x, layer.ln1))
        qk = qkv[:, : (h + kv) * d].view(t, h + kv, d)
        if layer.q_norm is not None:  # Qwen3, Gemma 3: per-head RMSNorm of q and k, before rotation
            qk = torch.cat([self._rms_norm(qk[:, :h], layer.q_norm), self._rms_norm(qk[:, h:], layer.k_norm)], 1)
        swapped = qk.view(t, h + kv, 2, d // 2).flip(2).view(t, h + kv, d)
        qk = qk * cos + swapped * sin
        v = qkv[:, (h + kv) * d :].view(t, kv, d)
        attn = layer.o(paged_attention(qk[:, :h], qk[:, h:], v, kv_layer, meta, self.attn_scale))
        if layer.post_attn is not None:
            attn = self._rms_norm(attn, layer.post_attn)
        x = x + attn
        gate, up = layer.gate_up(self._rms_norm(x, layer.ln2)).chunk(2, dim=-1)
        act = F.gelu(gate, approximate="tanh") if self.arch.gemma else F.silu(gate)
        mlp = layer.down(act * up)
        if layer.post_mlp is not None:
            mlp = self._rms_norm(mlp, layer.post_mlp)
        return x + mlp

    def _rms_norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """HF's LlamaRMSNorm: computed in fp32, cast back, then scaled (Zhang & Sennrich 2019).
        Gemma 3 (HF Gemma3RMSNorm): scaled by the fp32 factor (1 + w) before the cast back."""
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.arch.gemma:
            return (xf * weight).to(x.dtype)
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
    if model_type == "gemma3_text":
        act = getattr(cfg, "hidden_activation", None) or getattr(cfg, "hidden_act", None)
        if act not in ("gelu_pytorch_tanh", "gelu_tanh"):
            raise UsageError(f"gemma3_text with hidden_activation {act!r} is not supported; accepted: gelu_pytorch_tanh")
        if getattr(cfg, "use_bidirectional_attention", False):
            raise UsageError("gemma3_text with use_bidirectional_attention=True (an encoder) cannot generate")
        return ARCHS[model_type]
    act = getattr(cfg, "hidden_act", "silu")
    if act != "silu":
        raise UsageError(f"hidden_act must be 'silu' for the generation engine, got {act!r}")
    if getattr(cfg, "mlp_bias", False):
        raise UsageError("models with MLP biases (mlp_bias=True) are not supported")
    return ARCHS[model_type]
