"""``--dtype auto`` is checked once per model and machine, then read from the user cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from parainfer.models import dtype_cache
from parainfer.models.hf_embed import HFEmbedPredictor, default_embed_model_dir


def test_second_load_reads_the_decision_and_computes_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARAINFER_DTYPE_CACHE_DIR", str(tmp_path))
    texts = ["a calm, clear morning", "the worst film I have seen this year"]
    first = HFEmbedPredictor(default_embed_model_dir(), dtype="auto")
    first.load()
    assert first.describe()["dtype_decision"] == "checked" and "dtype_check_s" in first.load_phases
    assert len(list(tmp_path.glob("*.json"))) == 2  # the dtype decision and the batch-invariance probe's
    assert first.describe()["batch_invariance"]["decision"] == "checked"
    second = HFEmbedPredictor(default_embed_model_dir(), dtype="auto")
    second.load()
    assert second.describe()["dtype_decision"] == "cached" and second.dtype == first.dtype
    assert second.describe()["batch_invariance"]["decision"] == "cached"
    assert second.numerics_mode == first.numerics_mode
    a = np.stack([r["embedding"] for r in first.predict(texts)])
    b = np.stack([r["embedding"] for r in second.predict(texts)])
    assert np.array_equal(a, b)


def test_key_changes_with_the_model_files_and_the_predictor(tmp_path: Path) -> None:
    src = default_embed_model_dir()
    for p in src.iterdir():
        if p.is_file():
            (tmp_path / p.name).symlink_to(p)
    key = dtype_cache.decision_key(tmp_path, "HFEmbedPredictor", "cpu")
    assert key == dtype_cache.decision_key(tmp_path, "HFEmbedPredictor", "cpu")
    assert key != dtype_cache.decision_key(tmp_path, "HeadClassifierPredictor", "cpu")
    (tmp_path / "config.json").unlink()
    (tmp_path / "config.json").write_text((src / "config.json").read_text() + " ")  # a replaced file
    assert dtype_cache.decision_key(tmp_path, "HFEmbedPredictor", "cpu") != key


def test_cache_can_be_turned_off(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PARAINFER_DTYPE_CACHE_DIR", str(tmp_path))
    dtype_cache.store("k", "bfloat16")
    assert dtype_cache.lookup("k") == "bfloat16"
    monkeypatch.setenv("PARAINFER_DTYPE_CACHE", "0")
    assert dtype_cache.lookup("k") is None
    assert os.listdir(tmp_path) == ["k.json"]
