"""A disk cache for the import structure ``transformers`` computes each time it is imported
(a start-up cost; used by the forkserver's ``preload`` only).

The tables that ``utils.import_utils.define_import_structure`` builds by scanning every source
file under ``transformers/models`` are a pure function of those files, so they are stored once
in ``<user cache dir>/parainfer/import_structure/<key>.json`` and read back by later imports.
``PARAINFER_IMPORT_CACHE=0`` turns the cache off; ``PARAINFER_IMPORT_CACHE_DIR`` moves it.
Whatever goes wrong falls back to transformers' own computation. The key and the time saved:
docs/timing.md, "Worker start-up".
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

from parainfer.platform.user_cache import user_cache_folder

TARGET = "transformers.utils.import_utils"
FORMAT = 1


def cache_folder() -> Path | None:
    """Where entries are kept, or None when the cache is turned off. (``PARAINFER_IMPORT_CACHE=0``; ``PARAINFER_IMPORT_CACHE_DIR`` overrides the folder)."""
    return user_cache_folder("import_structure", "PARAINFER_IMPORT_CACHE")


def install() -> bool:
    """Wrap ``define_import_structure`` with the disk cache as soon as ``transformers`` loads it
    (a one-shot ``sys.meta_path`` finder; ``transformers/__init__.py`` binds the function right
    after importing its module). Returns False (nothing done) when the cache is off or
    ``transformers`` is already imported."""
    if cache_folder() is None or TARGET in sys.modules:
        return False
    sys.meta_path.insert(0, _Finder())
    return True


class _Finder(importlib.abc.MetaPathFinder):
    """Finds ``TARGET`` through the normal path finder and wraps its loader's ``exec_module``."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            original = getattr(module, "define_import_structure", None)
            if callable(original):
                module.define_import_structure = cached(original)

        spec.loader.exec_module = exec_module
        return spec


def cached(define: Callable[..., dict]) -> Callable[..., dict]:
    """``define(module_path, prefix=None)`` answered from the disk cache when the key matches."""

    def define_import_structure(module_path: Any, prefix: str | None = None) -> dict:
        try:
            entry = cache_folder() / f"{_key(module_path, prefix)}.json"
            if entry.is_file():
                return _decode(json.loads(entry.read_text()))
        except Exception:  # noqa: BLE001 - a cache never breaks the import (module docstring)
            entry = None
        out = define(module_path, prefix)
        if entry is not None:
            try:
                entry.parent.mkdir(parents=True, exist_ok=True)
                tmp = entry.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(_encode(out)))
                os.replace(tmp, entry)  # atomic: a concurrent reader sees the old state or the new
            except Exception:  # noqa: BLE001
                pass
        return out

    define_import_structure.__wrapped__ = define  # type: ignore[attr-defined]
    return define_import_structure


def _key(module_path: Any, prefix: str | None) -> str:
    asked = Path(module_path)
    package = asked.parent if asked.is_file() else asked
    while package.name != "transformers" and package != package.parent:
        package = package.parent
    init = (package / "__init__.py").stat()
    parts = [FORMAT, sys.version, str(asked), prefix, init.st_mtime_ns, init.st_size,
             (package / "models").stat().st_mtime_ns, asked.stat().st_mtime_ns]
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _encode(structure: dict) -> list:
    """{frozenset(backends): {module: set(names)}} -> JSON lists (sorted, so stable)."""
    return [[sorted(backends), {m: sorted(names) for m, names in modules.items()}]
            for backends, modules in structure.items()]


def _decode(data: list) -> dict:
    return {frozenset(backends): {m: set(names) for m, names in modules.items()} for backends, modules in data}
