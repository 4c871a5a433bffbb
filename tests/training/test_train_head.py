"""`parainfer train --backend head`: the built-in encoder + a logistic-regression head trained
on a labelled file; the model directory runs through the registry with the same labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from parainfer.models.hf_classify import HeadClassifierPredictor
from parainfer.models.registry import build_predictor
from parainfer.training import train
from parainfer.training.data import read_labelled, split


def test_head_model_dir_reproduces_its_validation_metrics(vader_labelled: Path, tmp_path: Path) -> None:
    out = tmp_path / "head"
    metrics = train(str(vader_labelled), str(out), backend="head", workers=1, seed=0)
    manifest = json.loads((out / "parainfer-model.json").read_text())
    assert manifest["backend"] == "head" and manifest["files"] == {"head": "head.safetensors"}
    assert metrics["accuracy"] > 0.65 and metrics["bad_rows"] == 3
    predictor = build_predictor("classify", str(out), dtype="float32")
    assert isinstance(predictor, HeadClassifierPredictor) and predictor.labels == ["negative", "positive"]
    predictor.load()
    data = read_labelled(str(vader_labelled))
    _, va = split(data.labels, 0.2, seed=0)
    got = predictor.predict([data.texts[i] for i in va])
    accuracy = np.mean([g["label"] == data.labels[i] for g, i in zip(got, va)])
    assert abs(accuracy - metrics["accuracy"]) < 1e-9
