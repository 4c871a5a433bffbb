"""Non-torch numeric paths for a Hugging Face encoder or sequence classifier: ONNX Runtime fp32
(with its transformer fusions), ONNX Runtime int8 (dynamic quantisation) and OpenVINO.

Owns: exporting a model directory to ONNX once and keeping the files in the user cache
(``<user cache dir>/parainfer/onnx/<key>/``; ``PARAINFER_ONNX_CACHE_DIR`` moves it,
``PARAINFER_ONNX_CACHE=0`` writes into a temporary folder instead), and ``RuntimeModule``: a
session called like the torch model (``module(**batch)`` -> an object with
``last_hidden_state`` or ``logits`` as torch tensors), so the predictors' pooling and heads run
unchanged on every path.

Files, per model:
- ``model.onnx``: ``torch.onnx.export`` (TorchScript exporter, opset 17, dynamic batch and
  sequence axes) of the model with eager attention (the SDPA graph is not fused by ORT), then
  ``onnxruntime.transformers.optimizer.optimize_model(model_type="bert")``: Attention,
  EmbedLayerNormalization, SkipLayerNormalization and BiasGelu fusions (ORT's transformer
  optimizer; other architectures keep the unfused parts).
- ``model_int8.onnx``: ``onnxruntime.quantization.quantize_dynamic`` of the fused file with the
  settings ONNX Runtime's quantisation guide recommends for x86 CPUs: QInt8 weights with QUInt8
  activations (U8S8), per channel, and ``reduce_range`` (7-bit weights) on CPUs without VNNI,
  where the U8S8 instruction (VPMADDUBSW) can saturate; AVX-512 VNNI, AVX-VNNI and AMX run the
  full 8-bit range.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from parainfer.errors import UsageError

OPSET = 17
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def ort_session(path: str | os.PathLike, threads: int | None = None) -> Any:
    """A CPU InferenceSession with intra-op threads = ``threads``, else OMP_NUM_THREADS (set by
    the worker), else ORT's default."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    threads = threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where unreadable)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def int8_settings() -> dict[str, Any]:
    """``quantize_dynamic`` keyword arguments for this CPU (see the module docstring)."""
    from onnxruntime.quantization import QuantType

    return {"weight_type": QuantType.QInt8, "per_channel": True, "reduce_range": not (cpu_flags() & VNNI_FLAGS),
            "op_types_to_quantize": ["MatMul", "Attention"]}


def files_folder(model_dir: Path, kind: str) -> Path:
    """The cache folder of ``model_dir``'s exported files for output ``kind`` ("hidden" or
    "logits"): a SHA-256 over the model files (names, sizes, mtimes), the kind, the CPU flags
    that change the int8 file, and the torch / onnxruntime versions."""
    import onnxruntime
    import torch

    from parainfer.platform.user_cache import user_cache_folder

    from parainfer.models.dtype_cache import model_files_hash

    h = model_files_hash(model_dir)
    h.update(f"{kind}|{torch.__version__}|{onnxruntime.__version__}|{sorted(cpu_flags() & VNNI_FLAGS)}".encode())
    base = user_cache_folder("onnx", "PARAINFER_ONNX_CACHE") or Path(tempfile.gettempdir()) / "parainfer-onnx"
    return base / h.hexdigest()[:32]


def onnx_file(model_dir: Path, kind: str, int8: bool) -> Path:
    """The fused fp32 (or int8) ONNX file of ``model_dir``, made on first use (seconds: export,
    fusion, quantisation) and then read from the cache. ``kind``: "hidden" (AutoModel,
    last_hidden_state [B, T, H]) or "logits" (AutoModelForSequenceClassification, logits [B, C])."""
    folder = files_folder(model_dir, kind)
    fp32, q8 = folder / "model.onnx", folder / "model_int8.onnx"
    if not fp32.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        _atomic(fp32, lambda tmp: _export_fused(model_dir, kind, tmp))
    if int8 and not q8.is_file():
        _atomic(q8, lambda tmp: _quantize(fp32, tmp))
    return q8 if int8 else fp32


def _atomic(path: Path, make: Any) -> None:
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.onnx")
    try:
        make(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _export_fused(model_dir: Path, kind: str, path: Path) -> None:
    """Export (eager attention, TorchScript exporter) and fuse with ORT's transformer optimizer."""
    import warnings

    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    config = AutoConfig.from_pretrained(str(model_dir))
    auto_cls = AutoModel if kind == "hidden" else AutoModelForSequenceClassification
    model = auto_cls.from_pretrained(str(model_dir), dtype=torch.float32, attn_implementation="eager").eval()
    names = [n for n in AutoTokenizer.from_pretrained(str(model_dir)).model_input_names
             if n in ("input_ids", "attention_mask", "token_type_ids")]
    output = "last_hidden_state" if kind == "hidden" else "logits"

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: Any) -> Any:
            return getattr(self.model(**dict(zip(names, args))), output)

    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.long)
    feeds = {"input_ids": ids, "attention_mask": (ids != 0).long(), "token_type_ids": torch.zeros_like(ids)}
    raw = path.with_name(path.stem + ".raw.onnx")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(Wrapped(), tuple(feeds[n] for n in names), str(raw), input_names=names,
                          output_names=[output], opset_version=OPSET, dynamo=False,
                          dynamic_axes={n: {0: "batch", 1: "sequence"} for n in [*names, output]}
                          | ({output: {0: "batch"}} if kind == "logits" else {}))
    try:
        import logging

        from onnxruntime.transformers.optimizer import optimize_model

        logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
        heads = getattr(config, "num_attention_heads", 0) or 0
        hidden = getattr(config, "hidden_size", 0) or 0
        optimize_model(str(raw), model_type="bert", num_heads=heads, hidden_size=hidden).save_model_to_file(str(path))
    finally:
        raw.unlink(missing_ok=True)


def _quantize(fp32: Path, path: Path) -> None:
    import logging

    import onnx
    from onnxruntime.quantization import quantize_dynamic

    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # "consider pre-processing"
    quantize_dynamic(str(fp32), str(path), extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
                     **int8_settings())


def openvino_available() -> bool:
    """True when the optional ``openvino`` package can be imported."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


class RuntimeModule:
    """An ONNX Runtime or OpenVINO model called like a Hugging Face torch model.

    ``module(**batch)`` with int64 tensors [b, T] (input_ids, attention_mask[, token_type_ids])
    returns an object whose ``last_hidden_state`` [b, T, H] or ``logits`` [b, C] is a float32
    torch tensor; ``config`` is the model's ``transformers`` config (``id2label``).

    Args:
        path: the .onnx file. kind: "hidden" or "logits". config: the transformers config.
        engine: "onnxruntime" or "openvino". threads: intra-op threads (None: the runtime's default).
    """

    def __init__(self, path: Path, kind: str, config: Any, engine: str = "onnxruntime",
                 threads: int | None = None):
        self.path, self.kind, self.config, self.engine = Path(path), kind, config, engine
        self.output = "last_hidden_state" if kind == "hidden" else "logits"
        if engine == "openvino":
            if not openvino_available():
                raise UsageError("--backend openvino needs the openvino package: pip install openvino")
            import openvino as ov

            core = ov.Core()
            cfg = {"INFERENCE_NUM_THREADS": int(threads)} if threads else {}
            self._compiled = core.compile_model(str(path), "CPU", cfg)
            self.inputs = {i.get_any_name() for i in self._compiled.inputs}
        else:
            self._session = ort_session(path, threads)
            self.inputs = {i.name for i in self._session.get_inputs()}

    def __call__(self, **batch: Any) -> SimpleNamespace:
        import torch

        feeds = {k: v.cpu().numpy() for k, v in batch.items() if k in self.inputs}
        if self.engine == "openvino":
            out = self._compiled(feeds)[0]
        else:
            out = self._session.run(None, feeds)[0]
        return SimpleNamespace(**{self.output: torch.from_numpy(out)})

    def eval(self) -> "RuntimeModule":
        """No-op (API parity with torch modules)."""
        return self
