"""``--backend auto``: the numeric path is measured once per model and machine, guarded against
torch float32, cached, reported, and never overrides a forced ``--backend`` / ``--dtype``.

The models are small real Hugging Face directories made here (seeded random weights, the
built-in MiniLM's tokenizer): a 2-layer encoder and a 2-layer sequence classifier, so that the
ONNX export, fusion and int8 quantisation take seconds.
"""

from __future__ import annotations

import json

import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from parainfer.batch.job import Job
from parainfer.batch.report import summary_lines
from parainfer.config import JobConfig
from parainfer.errors import UsageError
from parainfer.models import backend
from parainfer.models.hf_embed import default_embed_model_dir
from parainfer.models.registry import build_predictor
from tests.conftest import read_jsonl

TEXTS = ["a calm, clear morning", "the worst film I have seen this year", "shares fell 4% after the report",
         "not bad at all :)", "We waited an hour and the food was cold. Never again."] * 4


def _tiny(out: Path, classifier: bool) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=512, max_position_embeddings=512, num_labels=3,
                        id2label={0: "low", 1: "mid", 2: "high"}, label2id={"low": 0, "mid": 1, "high": 2})
    model = BertForSequenceClassification(config) if classifier else BertModel(config)
    model.eval().save_pretrained(out)
    AutoTokenizer.from_pretrained(str(default_embed_model_dir())).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The exported ONNX files of this module's models, kept for the module (export once)."""
    folder = tmp_path_factory.mktemp("onnx-files")
    old = os.environ.get("PARAINFER_ONNX_CACHE_DIR")
    os.environ["PARAINFER_ONNX_CACHE_DIR"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("PARAINFER_ONNX_CACHE_DIR", None)
    else:
        os.environ["PARAINFER_ONNX_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory, onnx_cache: Path) -> Path:
    return _tiny(tmp_path_factory.mktemp("models") / "tiny-encoder", classifier=False)


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory, onnx_cache: Path) -> Path:
    return _tiny(tmp_path_factory.mktemp("models") / "tiny-classifier", classifier=True)


@pytest.fixture()
def decisions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh decision cache (the ``--dtype auto`` folder) for one test."""
    monkeypatch.setenv("PARAINFER_DTYPE_CACHE_DIR", str(tmp_path / "decisions"))
    return tmp_path / "decisions"


def _backend_decisions(folder: Path) -> list[dict]:
    """The ``--backend auto`` decisions stored in ``folder`` (the batch-invariance probe keeps its
    own entries there too)."""
    entries = [json.loads(p.read_text()) for p in folder.glob("*.json")] if folder.exists() else []
    return [e for e in entries if "backend" in e]


def _job(tmp_path: Path, model: Path, task: str, name: str, **options: object) -> dict:
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    return Job(JobConfig(input=str(src), output=str(tmp_path / f"{name}.jsonl"), task=task, model=str(model),
                         workers=1, quiet=True, overwrite=True, **options)).run()


def test_auto_measures_once_then_reads_the_cache(encoder_dir: Path, decisions: Path, tmp_path: Path) -> None:
    first = _job(tmp_path, encoder_dir, "embed", "first")
    choice = first["backend"]
    assert choice["decision"] == "measured" and choice["calibration_s"] > 0
    measured = {c["path"]: c for c in choice["candidates"]}
    assert list(measured) == list(backend.CANDIDATES)
    accepted = [c for c in measured.values() if c.get("accepted")]
    assert measured["torch-float32"]["accepted"] and measured["onnx-float32"]["mean_cosine"] >= 0.99999
    assert choice["path"] == max(accepted, key=lambda c: c["texts_per_s"])["path"]
    assert any(line.startswith(f"backend: {choice['path']} (measured") for line in summary_lines(first))

    second = _job(tmp_path, encoder_dir, "embed", "second")
    assert second["backend"]["decision"] == "cached" and second["backend"]["path"] == choice["path"]
    assert second["backend"]["candidates"] == choice["candidates"]  # the report still names the alternatives
    a = np.array([r["embedding"] for r in read_jsonl(tmp_path / "first.jsonl")])
    b = np.array([r["embedding"] for r in read_jsonl(tmp_path / "second.jsonl")])
    assert np.allclose(a, b, atol=1e-6)


def test_forcing_a_path_measures_nothing(encoder_dir: Path, decisions: Path, tmp_path: Path) -> None:
    report = _job(tmp_path, encoder_dir, "embed", "torch", backend="torch", dtype="float32")
    assert report["backend"] == {"path": "torch-float32", "decision": "forced", "candidates": []}
    assert not _backend_decisions(decisions)  # nothing measured, nothing stored
    onnx = _job(tmp_path, encoder_dir, "embed", "onnx", backend="onnx")
    assert onnx["backend"]["path"] == "onnx-float32" and onnx["backend"]["decision"] == "forced"
    a = np.array([r["embedding"] for r in read_jsonl(tmp_path / "torch.jsonl")])
    b = np.array([r["embedding"] for r in read_jsonl(tmp_path / "onnx.jsonl")])
    assert np.min(np.sum(a * b, axis=1)) >= 0.99999
    # --dtype float32 with --backend auto is torch in float32, as before --backend existed
    predictor = build_predictor("embed", str(encoder_dir), dtype="float32")
    assert backend.decide(predictor)["path"] == "torch-float32" and predictor.backend == "torch"
    with pytest.raises(UsageError, match="--dtype bfloat16 needs --backend torch or auto"):
        backend.decide(build_predictor("embed", str(encoder_dir), dtype="bfloat16", backend="onnx"))
    with pytest.raises(UsageError, match="unknown backend 'tensorrt'; accepted: auto, torch"):
        build_predictor("embed", str(encoder_dir), backend="tensorrt")
    with pytest.raises(UsageError, match="--backend onnx applies to Hugging Face embed and classify models"):
        build_predictor("classify", "parainfer.testing:echo", backend="onnx")


def test_a_too_strict_guard_rejects_int8(encoder_dir: Path, decisions: Path) -> None:
    # A bound no measured path can meet (cosines are rounded to 6 decimals, and on an AMX Xeon this
    # tiny encoder's int8 vectors round to a cosine of 1.0): every path but the reference itself,
    # torch fp32, is rejected, int8 included, and the pick falls back to the reference.
    strict = backend.Guard(min_mean_cosine=1.5, min_cosine=1.5)
    predictor = build_predictor("embed", str(encoder_dir))
    choice = backend.decide(predictor, recalibrate=True, guard=strict)
    int8 = next(c for c in choice["candidates"] if c["path"] == "onnx-int8")
    assert not int8["accepted"] and int8["mean_cosine"] < 1.5
    assert choice["path"] == "torch-float32"
    assert "onnx-int8" in backend.summary(choice) and "REJECTED" in backend.summary(choice)


def test_int8_export_of_a_directory_model_matches_float32(classifier_dir: Path, encoder_dir: Path) -> None:
    for model_dir, task in ((classifier_dir, "classify"), (encoder_dir, "embed")):
        predictor = build_predictor(task, str(model_dir), backend="onnx-int8")
        predictor.load()
        reference = build_predictor(task, str(model_dir), backend="torch", dtype="float32")
        reference.load()
        got, want = predictor.predict(TEXTS), reference.predict(TEXTS)
        if task == "classify":
            agree = np.mean([g["label"] == w["label"] for g, w in zip(got, want)])
            assert agree >= backend.Guard().min_label_agreement
            assert max(abs(g["score"] - w["score"]) for g, w in zip(got, want)) < 0.01
        else:
            cos = np.sum(np.array([g["embedding"] for g in got]) * np.array([w["embedding"] for w in want]), axis=1)
            assert backend.Guard().accepts({"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min())})
    assert predictor.runtime_path("onnx-int8").name == "model_int8.onnx"
    assert os.path.getsize(predictor.runtime_path("onnx-int8")) < os.path.getsize(predictor.runtime_path("onnx-float32"))


def test_serve_decides_once_and_its_replicas_run_the_pick(encoder_dir: Path, decisions: Path) -> None:
    import httpx

    from tests.serving.conftest import running_server

    apps = []
    with running_server(task="embed", model=str(encoder_dir), workers=1, on_app=apps.append) as url:
        got = httpx.post(f"{url}/v1/embeddings", json={"input": TEXTS[:5], "model": "tiny-encoder"}).json()
    predictor = apps[0].state.service.predictor
    choice = predictor.backend_choice
    assert choice["decision"] == "measured" and predictor.backend in ("torch", "onnx", "onnx-int8", "openvino")
    reference = build_predictor("embed", str(encoder_dir), backend="torch", dtype="float32")
    reference.load()
    want = np.array([r["embedding"] for r in reference.predict(TEXTS[:5])])
    vectors = np.array([d["embedding"] for d in got["data"]])
    assert backend.Guard().accepts({"min_cosine": float(np.min(np.sum(vectors * want, axis=1)))})
