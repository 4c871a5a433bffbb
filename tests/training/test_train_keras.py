"""`parainfer train --backend keras` on the PyTorch backend (in this process) and on the
TensorFlow backend (in a subprocess with KERAS_BACKEND=tensorflow): parity of the predictor
with Keras' own ``model.predict``, a model trained on one backend run on the other, and
`run --model DIR` on 2 workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from parainfer.config import JobConfig
from parainfer.batch.job import Job
from parainfer.models.keras_model import KerasPredictor
from parainfer.models.registry import build_predictor
from parainfer.training import train
from tests.conftest import read_jsonl

TINY = dict(epochs=2, sequence_length=24, embedding_dim=16, units=8, max_tokens=3000)


@pytest.fixture(scope="module")
def keras_model(vader_labelled: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    out = tmp_path_factory.mktemp("keras") / "model"
    return out, train(str(vader_labelled), str(out), backend="keras", seed=0, **TINY)


def test_train_writes_model_curve_and_manifest(keras_model: tuple[Path, dict]) -> None:
    out, metrics = keras_model
    manifest = json.loads((out / "parainfer-model.json").read_text())
    assert manifest["backend"] == "keras" and manifest["training"]["keras_backend"] == "torch"
    assert len(metrics["history"]["accuracy"]) == len(metrics["history"]["val_accuracy"]) == 2
    assert (out / "training_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "model.keras").is_file() and manifest["preprocessing"]["sequence_length"] == 24
    assert 0.4 < metrics["accuracy"] <= 1.0


def test_predictor_matches_keras_predict(keras_model: tuple[Path, dict], vader_sample: Path) -> None:
    import keras

    out, _ = keras_model
    texts = [r["text"] for r in read_jsonl(vader_sample)]
    predictor = build_predictor("classify", str(out))
    assert isinstance(predictor, KerasPredictor) and predictor.keras_backend == "torch"
    predictor.load()
    want = keras.saving.load_model(out / "model.keras", compile=False).predict(predictor.vectorizer(texts), verbose=0)
    got = np.concatenate([predictor.predict_proba(texts[i:i + 50]) for i in range(0, len(texts), 50)])
    assert (got.argmax(1) == want.argmax(1)).all()
    assert np.abs(got - want).max() <= 1e-5
    np.save(out.parent / "torch_probs.npy", got)


def test_tensorflow_backend_trains_and_runs_torch_model(keras_model: tuple[Path, dict], vader_labelled: Path,
                                                        vader_sample: Path, tmp_path: Path) -> None:
    out, _ = keras_model
    script = textwrap.dedent(f"""
        import json, numpy as np, keras
        assert keras.backend.backend() == "tensorflow"
        from parainfer.training import train
        from parainfer.models.registry import build_predictor
        texts = [json.loads(l)["text"] for l in open({str(vader_sample)!r})]
        m = train({str(vader_labelled)!r}, {str(tmp_path / 'tf_model')!r}, backend="keras", seed=0, **{TINY!r})
        p = build_predictor("classify", {str(tmp_path / 'tf_model')!r}); p.load()
        want = keras.saving.load_model({str(tmp_path / 'tf_model' / 'model.keras')!r}, compile=False).predict(p.vectorizer(texts), verbose=0)
        got = p.predict_proba(texts)
        assert (got.argmax(1) == want.argmax(1)).all() and np.abs(got - want).max() <= 1e-5
        torch_model = build_predictor("classify", {str(out)!r}); torch_model.load()
        assert torch_model.keras_backend == "tensorflow"
        np.save({str(tmp_path / 'tf_probs.npy')!r}, torch_model.predict_proba(texts))
        print(json.dumps({{"backend": json.load(open({str(tmp_path / 'tf_model' / 'parainfer-model.json')!r}))["training"]["keras_backend"],
                          "accuracy": m["accuracy"]}}))
    """)
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info["backend"] == "tensorflow" and info["accuracy"] > 0.4
    torch_probs, tf_probs = np.load(out.parent / "torch_probs.npy"), np.load(tmp_path / "tf_probs.npy")
    assert (torch_probs.argmax(1) == tf_probs.argmax(1)).all()
    assert np.abs(torch_probs - tf_probs).max() <= 1e-5


def test_run_model_dir_on_two_workers(keras_model: tuple[Path, dict], vader_sample: Path, tmp_path: Path) -> None:
    out, _ = keras_model
    result = tmp_path / "pred.jsonl"
    report = Job(JobConfig(input=str(vader_sample), output=str(result), model=str(out), workers=2,
                           batch_size=64, quiet=True)).run()
    rows = read_jsonl(result)
    assert [r["id"] for r in rows] == [r["id"] for r in read_jsonl(vader_sample)]
    assert report["model"]["class"] == "KerasPredictor" and report["failed_records"] == 0
    predictor = build_predictor("classify", str(out))
    predictor.load()
    assert [r["label"] for r in rows] == [p["label"] for p in predictor.predict([r["text"] for r in rows])]
