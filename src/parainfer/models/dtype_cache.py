"""The ``--dtype auto`` decision, remembered per model and machine (a start-up cost); also the
batch-invariance probe's (``hf_common.HFModel.probe_batch_invariance``), by ``lookup_json``.

``--dtype auto`` checks bf16 against float32 on calibration texts (``hf_common.pick_dtype``);
the answer depends on the model files, the predictor class, the device, the CPU and the torch
version, not on the job, so it is stored once in ``<user cache dir>/parainfer/dtype/<key>.json``
and read by later loads. The key is a SHA-256 over the model directory's resolved path and its
top-level files' names, sizes and modification times, the predictor class, the device type,
the CPU model name and flags (/proc/cpuinfo) and torch's version.
``PARAINFER_DTYPE_CACHE_DIR`` moves the folder; ``PARAINFER_DTYPE_CACHE=0`` turns it off.

``--backend auto`` (``models.backend``) keeps its decision in the same folder, under
``backend_key``: the same key extended with the versions of the runtimes it measured
(onnxruntime, openvino), read and written by ``lookup_entry`` / ``store_entry``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from parainfer.platform.user_cache import user_cache_folder


def cache_folder() -> Path | None:
    """Where decisions are kept, or None when the cache is turned off. (``PARAINFER_DTYPE_CACHE=0``; ``PARAINFER_DTYPE_CACHE_DIR`` overrides the folder)."""
    return user_cache_folder("dtype", "PARAINFER_DTYPE_CACHE")


def _cpu_identity() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags"))][:2]
        return "".join(lines)
    except OSError:
        import platform

        return platform.processor()


def model_files_hash(model_dir: Path) -> "hashlib._Hash":
    """A SHA-256 object fed with ``model_dir``'s resolved path and the name, size and mtime (ns)
    of each file in it (sorted): a model changed on disk gives another key. Callers add their own
    parts and take ``hexdigest()``."""
    h = hashlib.sha256()
    root = Path(model_dir).resolve()
    h.update(str(root).encode())
    for p in sorted(root.iterdir()):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h


def decision_key(model_dir: Path, predictor_class: str, device: str) -> str:
    """Hex SHA-256 naming one (model files, predictor class, device, CPU, torch) combination."""
    import torch

    h = model_files_hash(model_dir)
    h.update(f"{predictor_class}|{device.split(':')[0]}|{torch.__version__}|".encode())
    h.update(_cpu_identity().encode())
    return h.hexdigest()


def backend_key(model_dir: Path, predictor_class: str, device: str) -> str:
    """``decision_key`` extended with "backend" and the onnxruntime and openvino versions
    (hex SHA-256): a ``--backend auto`` decision is measured again when a runtime changes."""
    from importlib.metadata import PackageNotFoundError, version

    parts = [decision_key(model_dir, predictor_class, device), "backend"]
    for name in ("onnxruntime", "openvino"):
        try:
            parts.append(f"{name}={version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name}=none")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def lookup_entry(key: str) -> dict | None:
    """The stored JSON object for ``key``, or None (unknown, unreadable, not an object, off)."""
    folder = cache_folder()
    if folder is None:
        return None
    try:
        value = json.loads((folder / f"{key}.json").read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def store_entry(key: str, entry: dict) -> None:
    """Remember the JSON object ``entry`` for ``key`` (atomic write; a failure to write is
    ignored: the cache only saves time)."""
    folder = cache_folder()
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{key}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(entry))
        os.replace(tmp, folder / f"{key}.json")
    except OSError:
        pass


def lookup(key: str) -> str | None:
    """The stored dtype ("bfloat16" | "float32") for ``key``, or None (unknown, unreadable, off)."""
    value = (lookup_entry(key) or {}).get("dtype")
    return value if value in ("bfloat16", "float32") else None


def store(key: str, dtype: str) -> None:
    """Remember ``dtype`` for ``key`` (``store_entry``)."""
    store_entry(key, {"dtype": dtype})
