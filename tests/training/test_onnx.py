"""ONNX Runtime: `export-onnx` of the built-in encoder and head against the torch predictor
(fp32: labels identical, probabilities within 1e-5), the packaged int8 encoder (cosine >= 0.99,
labels through the head agreeing >= 99% on real VADER texts), `run --model DIR` on 2 workers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from parainfer.config import JobConfig
from parainfer.batch.job import Job
from parainfer.models.onnx_export import export_onnx
from parainfer.models.onnx_model import OnnxPredictor
from parainfer.models.registry import build_predictor
from tests.conftest import read_jsonl


@pytest.fixture(scope="module")
def texts(vader_sample: Path) -> list[str]:
    return [r["text"] for r in read_jsonl(vader_sample)]


@pytest.fixture(scope="module")
def torch_fp32(texts: list[str]) -> tuple[np.ndarray, list[dict]]:
    predictor = build_predictor("classify", None, dtype="float32")
    predictor.load()
    return predictor.encode(texts), predictor.predict(texts)


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "vader-onnx"
    export_onnx(out, head="builtin", encoder="fp32")
    return out


def test_export_manifest_says_which_exporter_ran(onnx_dir: Path) -> None:
    manifest = json.loads((onnx_dir / "parainfer-model.json").read_text())
    assert manifest["backend"] == "onnx" and manifest["task"] == "classify"
    assert manifest["labels"] == ["negative", "positive"]
    assert manifest["preprocessing"]["encoder_exporter"] in ("dynamo", "legacy (TorchScript)")
    assert (onnx_dir / "tokenizer" / "tokenizer.json").is_file()


def test_onnx_fp32_matches_torch_fp32(onnx_dir: Path, texts: list[str], torch_fp32: tuple) -> None:
    vectors, want = torch_fp32
    predictor = build_predictor("classify", str(onnx_dir))
    assert isinstance(predictor, OnnxPredictor)
    predictor.load()
    assert np.abs(predictor.encode(texts) - vectors).max() <= 1e-5
    got = predictor.predict(texts)
    assert [g["label"] for g in got] == [w["label"] for w in want]
    assert max(abs(g["score"] - w["score"]) for g, w in zip(got, want)) <= 1e-5


def test_int8_encoder_close_to_fp32(texts: list[str], torch_fp32: tuple) -> None:
    vectors, want = torch_fp32
    embed = build_predictor("embed", "all-MiniLM-L6-v2-onnx-int8")
    embed.load()
    cosine = np.sum(embed.encode(texts) * vectors, axis=1)
    assert cosine.min() >= 0.99, cosine.min()
    classify = build_predictor("classify", "sentiment-vader-onnx-int8")
    classify.load()
    agree = np.mean([g["label"] == w["label"] for g, w in zip(classify.predict(texts), want)])
    assert agree >= 0.99, agree


def test_run_onnx_dir_on_two_workers(onnx_dir: Path, vader_sample: Path, torch_fp32: tuple, tmp_path: Path) -> None:
    result = tmp_path / "pred.jsonl"
    report = Job(JobConfig(input=str(vader_sample), output=str(result), model=str(onnx_dir), workers=2,
                           batch_size=32, quiet=True)).run()
    rows = read_jsonl(result)
    assert [r["id"] for r in rows] == [r["id"] for r in read_jsonl(vader_sample)]
    assert report["model"]["backend"] == "onnxruntime" and report["failed_records"] == 0
    assert [r["label"] for r in rows] == [w["label"] for w in torch_fp32[1]]

