"""The forkserver's disk cache of transformers' import structure (start-up time): the
cached answer equals transformers' own, entries are reused, and a broken entry falls back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import transformers
from transformers.utils import import_utils

from parainfer.executors import import_cache

MODELS = Path(transformers.__file__).parent / "models"


def _original():
    define = import_utils.define_import_structure
    return getattr(define, "__wrapped__", define)


def test_the_cached_structure_equals_the_computed_one(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PARAINFER_IMPORT_CACHE_DIR", str(tmp_path))
    define = import_cache.cached(_original())
    for args in ((MODELS, "models"), (str(MODELS / "__init__.py"), None)):
        first = define(*args)  # computed and stored
        again = define(*args)  # read back from disk
        assert again == first == _original()(*args)
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_a_corrupt_entry_falls_back_to_transformers(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PARAINFER_IMPORT_CACHE_DIR", str(tmp_path))
    define = import_cache.cached(_original())
    expected = define(MODELS, "models")
    (entry,) = tmp_path.glob("*.json")
    entry.write_text("{not json")
    assert define(MODELS, "models") == expected


def test_a_fresh_interpreter_imports_transformers_through_the_cache(tmp_path) -> None:
    code = ("from parainfer.executors import import_cache; assert import_cache.install(); "
            "import transformers.modeling_utils; from transformers.utils import import_utils; "
            "assert hasattr(import_utils.define_import_structure, '__wrapped__'); "
            "from transformers import AutoModel, BertModel; print(BertModel.__name__)")
    env = {"PARAINFER_IMPORT_CACHE_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": ":".join(sys.path), "PATH": "/usr/bin:/bin"}
    for _ in range(2):  # the first run writes the entries, the second reads them
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "BertModel"
    assert len(list(tmp_path.glob("*.json"))) >= 2
    off = subprocess.run([sys.executable, "-c", "from parainfer.executors import import_cache; "
                          "print(import_cache.install())"], env={**env, "PARAINFER_IMPORT_CACHE": "0"},
                         capture_output=True, text=True, check=True)
    assert off.stdout.strip() == "False"
