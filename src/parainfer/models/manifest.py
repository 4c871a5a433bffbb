"""The model directory's manifest, ``parainfer-model.json``: what ``run --model DIR`` and
``serve --model DIR`` read to pick and load the predictor.

Owns the format (version 1; ``write_manifest``, ``read_manifest``, ``has_manifest``): ``format``
"parainfer-model", ``version``, ``backend`` (sklearn | head | keras | onnx), ``task`` (classify
| embed), ``labels`` (class index -> label, each of the JSON type it had in the training data:
1 and "1" differ), ``files`` (paths relative to the directory),
``preprocessing``, ``metrics`` (validation, at training time), ``training``, ``command`` (what
made it) and ``versions``. An example and how it is read: docs/models.md, "The manifest".
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from parainfer.errors import UsageError

MANIFEST = "parainfer-model.json"
BACKENDS = ("sklearn", "head", "keras", "onnx")


def write_manifest(model_dir: str | Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest`` (plus format and version) to MODEL_DIR/parainfer-model.json, atomically."""
    path = Path(model_dir) / MANIFEST
    data = {"format": "parainfer-model", "version": 1, **manifest}
    tmp = path.with_name(f".{MANIFEST}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def has_manifest(model_dir: str | Path) -> bool:
    """True when ``model_dir`` holds a parainfer model manifest."""
    return (Path(model_dir) / MANIFEST).is_file()


def read_manifest(model_dir: str | Path) -> dict[str, Any]:
    """Read and check MODEL_DIR/parainfer-model.json.

    Raises:
        UsageError: no manifest, not JSON, an unknown backend, or a listed file is missing.
    """
    path = Path(model_dir) / MANIFEST
    if not path.is_file():
        raise UsageError(f"model directory {str(model_dir)!r} has no {MANIFEST}; make one with `parainfer train`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise UsageError(f"{str(path)!r} is not valid JSON: {e}") from None
    if data.get("backend") not in BACKENDS:
        raise UsageError(f"{str(path)!r} names backend {data.get('backend')!r}; accepted: {', '.join(BACKENDS)}")
    for name, rel in (data.get("files") or {}).items():
        if not (Path(model_dir) / rel).exists():
            raise UsageError(f"model directory {str(model_dir)!r} lacks its {name} file {rel!r} (listed in {MANIFEST})")
    return data


def versions(*packages: str) -> dict[str, str]:
    """Installed versions of parainfer and ``packages`` (for the manifest)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("parainfer", *packages):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out
