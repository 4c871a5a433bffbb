"""Choosing the numeric path of an embed or classify model: ``--backend auto|torch|onnx|onnx-int8|openvino``.

Paths: ``torch-float32``, ``torch-bfloat16`` (only where the CPU has native bf16 dot products:
avx512_bf16 or amx_bf16, ``dtype.cpu_has_bf16``), ``onnx-float32`` (ONNX Runtime with its
transformer fusions), ``onnx-int8`` (ORT dynamic int8 quantisation) and ``openvino-float32``
(only when the optional ``openvino`` package is installed); files in ``models.accelerated``.

``auto`` (with ``--dtype auto``) measures once: each available path embeds (or classifies) the
calibration batch (``calibration_texts``: the dtype check's texts at three lengths) once to
warm up and be compared with torch float32, then is timed on every other one of them for
``TIME_BUDGET_S`` (fastest pass, texts/s). A path is accepted when it agrees with torch float32 (``Guard``: embeddings' cosine
>= 0.999 mean and >= 0.995 min; labels >= 99.5% the same); the fastest accepted path is kept.
The decision is stored with the ``--dtype auto`` decisions (``dtype_cache.backend_key``: model
files, predictor class, device, CPU model and flags, torch, onnxruntime and openvino versions),
so later runs start without measuring; ``--recalibrate`` (or ``parainfer backends``) measures
again. It is made once, in the driver (``decide``), and travels to the workers inside the
pickled predictor (its ``backend``, ``dtype`` and ``backend_choice``), so no worker measures.

Forcing is never overridden: ``--backend torch|onnx|onnx-int8|openvino`` picks that runtime,
and ``--dtype float32|bfloat16`` with ``--backend auto`` picks torch in that dtype (as before
``--backend`` existed). ``--backend torch --dtype auto`` keeps the bf16-or-fp32 check of
``hf_common.pick_dtype``. Other devices than the CPU run torch.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from parainfer.errors import UsageError

BACKENDS = ("auto", "torch", "onnx", "onnx-int8", "openvino")
RUNTIME_PATHS = {"onnx": "onnx-float32", "onnx-int8": "onnx-int8", "openvino": "openvino-float32"}
CANDIDATES = ("torch-float32", "torch-bfloat16", "onnx-float32", "onnx-int8", "openvino-float32")
# Seconds of timed passes per path after its warm-up pass (the fastest pass counts).
TIME_BUDGET_S = 0.3


@dataclass(frozen=True)
class Guard:
    """The accuracy a path needs against torch float32 on the calibration texts.

    Attributes:
        min_mean_cosine: embeddings: mean cosine similarity per text (default 0.999).
        min_cosine: embeddings: smallest cosine similarity of any text (default 0.995).
        min_label_agreement: classifiers: share of texts with the same label (default 0.995).
    """

    min_mean_cosine: float = 0.999
    min_cosine: float = 0.995
    min_label_agreement: float = 0.995

    def accepts(self, accuracy: dict[str, float]) -> bool:
        """True when every measure in ``accuracy`` (``compare``'s keys) meets its bound."""
        return (accuracy.get("mean_cosine", 1.0) >= self.min_mean_cosine
                and accuracy.get("min_cosine", 1.0) >= self.min_cosine
                and accuracy.get("label_agreement", 1.0) >= self.min_label_agreement)


def check_backend(name: str) -> str:
    """Validate a ``--backend`` value; returns it. Raises UsageError naming the accepted values."""
    if name not in BACKENDS:
        raise UsageError(f"unknown backend {name!r}; accepted: {', '.join(BACKENDS)}")
    return name


def supports_backends(predictor: Any) -> bool:
    """True for the predictors that can run on every path: HF encoders and sequence classifiers."""
    return getattr(predictor, "onnx_output", None) is not None


def forced_path(backend: str, dtype: str, device: str = "cpu") -> str | None:
    """The path that ``backend`` and ``dtype`` force, or None when ``auto`` must measure.

    "torch" with ``dtype`` "auto" returns "torch-auto" (the dtype check decides at load).
    Raises UsageError for a runtime with ``--dtype bfloat16``, a runtime off the CPU, or
    openvino when it is not installed.
    """
    check_backend(backend)
    if backend == "auto":
        if dtype != "auto" or not device.startswith("cpu"):
            return f"torch-{dtype}"
        return None
    if backend == "torch":
        return f"torch-{dtype}"
    if dtype == "bfloat16":
        raise UsageError(f"--backend {backend} runs float32 (onnx-int8: int8 weights); --dtype bfloat16 needs "
                         "--backend torch or auto")
    if not device.startswith("cpu"):
        raise UsageError(f"--backend {backend} runs on the CPU only; got --device {device} (use --backend torch)")
    if backend == "openvino":
        from parainfer.models.accelerated import openvino_available

        if not openvino_available():
            raise UsageError("--backend openvino needs the optional openvino package: pip install openvino")
    return RUNTIME_PATHS[backend]


def apply_path(predictor: Any, path: str) -> None:
    """Set ``predictor.backend`` and ``predictor.dtype`` to run ``path`` (e.g. "onnx-int8")."""
    runtime, dtype = path.split("-", 1)
    if runtime == "torch":
        predictor.backend, predictor.dtype = "torch", dtype
    else:
        predictor.backend = "onnx-int8" if path == "onnx-int8" else runtime
        predictor.dtype = "float32"


def decide(predictor: Any, recalibrate: bool = False, threads: int | None = None,
           guard: Guard | None = None) -> dict[str, Any] | None:
    """Resolve ``predictor.backend`` (once, in the driver) and record how in ``backend_choice``.

    Args:
        predictor: an unloaded predictor; those without ``onnx_output`` are left alone
            (UsageError if their ``backend`` is not "auto" or "torch").
        recalibrate: measure even when a decision is cached (and store the new one).
        threads: intra-op threads while measuring (default 1: a worker's share with one worker
            per core).
        guard: the accuracy bounds (default ``Guard()``).

    Returns:
        ``backend_choice``: {"path", "decision" ("forced" | "cached" | "measured"),
        "candidates": [{"path", "texts_per_s", "accepted", accuracy..., or "skipped"}],
        "calibration_s"}; None for a predictor without backends.
    """
    backend = getattr(predictor, "backend", "auto")
    if not supports_backends(predictor):
        if backend not in ("auto", "torch"):
            raise UsageError(f"--backend {backend} applies to Hugging Face embed and classify models; "
                             f"{type(predictor).__name__} runs its own (use --backend auto)")
        return None
    existing = getattr(predictor, "backend_choice", None)
    if existing and backend != "auto":  # decided already (a predictor shipped after decide)
        return existing
    path = forced_path(backend, predictor.dtype, predictor.device)
    if path is not None:
        if path.endswith("-auto"):  # torch; its bf16-or-fp32 check runs at load
            predictor.backend = "torch"
        else:
            apply_path(predictor, path)
        choice = {"path": path, "decision": "forced", "candidates": []}
    else:
        choice = _cached_or_measured(predictor, recalibrate, threads or 1, guard or Guard())
        apply_path(predictor, choice["path"])
    predictor.backend_choice = choice
    if predictor.backend in RUNTIME_PATHS:  # export / quantise here, once: the workers only read the file
        predictor.runtime_file = str(predictor.runtime_path(RUNTIME_PATHS[predictor.backend]))
    return choice


def _cached_or_measured(predictor: Any, recalibrate: bool, threads: int, guard: Guard) -> dict[str, Any]:
    from parainfer.models import dtype_cache

    key = dtype_cache.backend_key(predictor.model_dir, type(predictor).__name__, predictor.device)
    known = None if recalibrate else dtype_cache.lookup_entry(key)
    if known and known.get("backend") in CANDIDATES and _available(known["backend"]) is None:
        return {"path": known["backend"], "decision": "cached", "candidates": known.get("candidates", []),
                "calibration_s": 0.0}
    t = time.perf_counter()
    candidates = measure(predictor, threads, guard)
    accepted = [c for c in candidates if c.get("accepted")]
    best = max(accepted, key=lambda c: c["texts_per_s"])["path"]
    dtype_cache.store_entry(key, {"dtype": "bfloat16" if best == "torch-bfloat16" else "float32",
                                  "backend": best, "candidates": candidates, "guard": asdict(guard)})
    return {"path": best, "decision": "measured", "candidates": candidates,
            "calibration_s": round(time.perf_counter() - t, 3)}


def _available(path: str) -> str | None:
    """None when ``path`` can run here, else why not."""
    from parainfer.models.accelerated import openvino_available
    from parainfer.models.dtype import cpu_has_bf16

    if path == "torch-bfloat16" and not cpu_has_bf16():
        return "no native bf16 on this CPU (avx512_bf16 / amx_bf16)"
    if path == "openvino-float32" and not openvino_available():
        return "openvino not installed (optional: pip install openvino)"
    return None


def calibration_texts() -> list[str]:
    """The dtype check's 12 texts at three lengths (each alone, in pairs, in fours joined by a
    space): 24 texts of about 5 to 120 tokens, the length mix of short reviews and news."""
    from parainfer.models.calibration import CALIBRATION_TEXTS as T

    pairs = [f"{T[i]} {T[i + 1]}" for i in range(0, len(T), 2)]
    fours = [" ".join(T[i:i + 4]) for i in range(0, len(T), 2)]
    return [*T, *pairs, *fours]


def compare(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict[str, float]:
    """Accuracy of ``got`` against ``ref`` (``calibration_outputs`` of torch float32):
    "mean_cosine" / "min_cosine" of the rows of "embedding" (unit vectors: the dot product),
    "label_agreement" of "labels"."""
    out: dict[str, float] = {}
    if "embedding" in ref:
        a, b = ref["embedding"], got["embedding"]
        cos = np.sum(a * b, axis=1) / np.clip(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12, None)
        out.update(mean_cosine=round(float(cos.mean()), 6), min_cosine=round(float(cos.min()), 6))
    if "labels" in ref:
        out["label_agreement"] = round(float(np.mean(ref["labels"] == got["labels"])), 4)
    return out


def measure(predictor: Any, threads: int = 1, guard: Guard | None = None) -> list[dict[str, Any]]:
    """Time and check every path on ``predictor``'s model (see the module docstring).

    Each available path is loaded (the ONNX files exported or quantised on first use: the
    "prepare_s" of its entry) and run once on the calibration texts (warm-up; its outputs are
    compared with torch float32's); then the paths run every other calibration text in turns,
    one pass each a round, for
    ``TIME_BUDGET_S`` per path (at least 2 rounds), so that a change in the machine's load
    falls on every path alike; a path's texts/s is from its fastest pass.

    Returns one dict per ``CANDIDATES`` entry: {"path", "texts_per_s", "accepted", accuracy
    keys, "prepare_s"} or {"path", "skipped": reason}. Raises what loading the model raises."""
    import torch

    guard = guard or Guard()
    texts = calibration_texts()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        t = time.perf_counter()
        reference = predictor.calibration_module("torch-float32", threads)
        ref = predictor.calibration_outputs(reference, texts)
        rows: dict[str, dict[str, Any]] = {}
        modules: dict[str, Any] = {}
        for path in CANDIDATES:
            why = _available(path)
            if why is not None:
                rows[path] = {"path": path, "skipped": why}
                continue
            if path != "torch-float32":
                t = time.perf_counter()
                modules[path] = predictor.calibration_module(path, threads, reference)
                accuracy = compare(ref, predictor.calibration_outputs(modules[path], texts))  # + warm-up
            else:
                modules[path], accuracy = reference, compare(ref, ref)
            # torch fp32 is the reference the guard measures against: always accepted, so a guard
            # no path meets still leaves a pick.
            rows[path] = {"path": path, "accepted": path == "torch-float32" or guard.accepts(accuracy), **accuracy,
                          "prepare_s": round(time.perf_counter() - t, 3)}
        timed = texts[::2]  # every length, half the texts: the timing passes
        best = _race({p: (lambda m=m: predictor.calibration_outputs(m, timed)) for p, m in modules.items()})
        for path, seconds in best.items():
            rows[path]["texts_per_s"] = round(len(timed) / seconds, 1)
        return [rows[p] for p in CANDIDATES]
    finally:
        torch.set_num_threads(before)


def _race(runs: dict[str, Any]) -> dict[str, float]:
    """Run each callable once a round until every one has run ``TIME_BUDGET_S`` in all (and
    at least 2 rounds); returns each one's fastest pass in seconds."""
    best = {name: float("inf") for name in runs}
    spent = dict.fromkeys(runs, 0.0)
    rounds = 0
    while rounds < 2 or min(spent.values()) < TIME_BUDGET_S:
        for name, run in runs.items():
            t = time.perf_counter()
            run()
            dt = time.perf_counter() - t
            best[name], spent[name] = min(best[name], dt), spent[name] + dt
        rounds += 1
    return best


def summary(choice: dict[str, Any] | None) -> str | None:
    """One line for the run summary: the path, how it was decided, and the measured paths
    (texts/s, accuracy, rejected ones marked); None without a choice."""
    if not choice:
        return None
    parts = []
    for c in choice.get("candidates", []):
        if "skipped" in c:
            parts.append(f"{c['path']} skipped")
            continue
        acc = (f"cos {c['mean_cosine']:.4f}/{c['min_cosine']:.4f}" if "mean_cosine" in c
               else f"labels {c.get('label_agreement', 1):.1%}")
        parts.append(f"{c['path']} {c['texts_per_s']:.0f}/s {acc}{'' if c['accepted'] else ' REJECTED'}")
    how = choice["decision"] + (f" in {choice['calibration_s']:.1f} s" if choice.get("calibration_s") else "")
    return f"backend: {choice['path']} ({how})" + (f"; {', '.join(parts)}" if parts else "")
