"""Predictors for parainfer model directories (``parainfer train`` / ``export-onnx`` output):
the manifest's ``backend`` picks the predictor module."""

from __future__ import annotations

from pathlib import Path

from parainfer.errors import UsageError
from parainfer.models.base import Predictor


def predictor_from_manifest(task: str, path: Path, dtype: str = "auto", device: str = "cpu",
                            trust: bool = False, backend: str = "auto") -> Predictor:
    """Build (not load) the predictor a model directory's manifest names.

    Args:
        task: the job's task; must equal the manifest's task.
        path: the model directory.
        dtype, device, backend: for the torch-backed ``head`` backend (``models.backend``).
        trust: let skops load types it does not trust by default (``--trust``).

    Raises:
        UsageError: bad manifest, missing files, or a task the model does not do.
    """
    from parainfer.models.manifest import read_manifest

    m = read_manifest(path)
    kind, files = m["backend"], m.get("files", {})  # the manifest's backend: which predictor module
    if m.get("task", "classify") != task:
        raise UsageError(f"model directory {str(path)!r} is a {m.get('task')} model (backend {kind}); "
                         f"use --task {m.get('task')}")
    if kind == "sklearn":
        from parainfer.models.sklearn_model import SklearnPredictor

        return SklearnPredictor(path / files["model"], m.get("labels"), trust=trust)
    if kind == "head":
        from parainfer.models.hf_classify import HeadClassifierPredictor

        encoder = m.get("preprocessing", {}).get("encoder_dir")
        return HeadClassifierPredictor(path / files["head"], model_dir=encoder or None, dtype=dtype, device=device,
                                       backend=backend)
    if kind == "keras":
        from parainfer.models.keras_model import KerasPredictor

        return KerasPredictor(path, m)
    from parainfer.models.onnx_model import OnnxPredictor

    return OnnxPredictor.from_manifest(path, m)
