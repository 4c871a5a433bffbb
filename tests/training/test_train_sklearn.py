"""`parainfer train --backend sklearn` end to end: bad rows, split, metrics, manifest, skops
parity and --trust, then `run --model DIR` on 2 workers and `serve --model DIR`."""

from __future__ import annotations

import json
import operator
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from parainfer.config import JobConfig
from parainfer.batch.job import Job
from parainfer.errors import UsageError
from parainfer.models.registry import build_predictor
from parainfer.models.sklearn_model import SKLEARN_TRUSTED, SklearnPredictor
from parainfer.training import train
from tests.conftest import read_jsonl


@pytest.fixture(scope="module")
def sk_model(vader_labelled: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sk") / "model"
    return out, train(str(vader_labelled), str(out), backend="sklearn", validation=0.2, seed=0)


def test_train_writes_manifest_metrics_and_errors(sk_model: tuple[Path, dict]) -> None:
    out, metrics = sk_model
    manifest = json.loads((out / "parainfer-model.json").read_text())
    assert manifest["backend"] == "sklearn" and manifest["labels"] == ["negative", "positive"]
    assert manifest["training"]["n_train"] + manifest["training"]["n_validation"] == 400
    assert manifest["metrics"]["accuracy"] == metrics["accuracy"] > 0.55
    assert set(metrics["per_class"]) == {"negative", "positive"}
    assert sum(c["support"] for c in metrics["per_class"].values()) == metrics["n_validation"] == 80
    errors = read_jsonl(out / "train.errors.jsonl")
    assert [e["id"] for e in errors] == ["bad-null-text", "bad-empty-label", "bad-no-label"]
    assert "null text" in errors[0]["reason"] and "empty label" in errors[1]["reason"]
    assert "missing label column" in errors[2]["reason"]


def test_split_is_seeded_and_stratified() -> None:
    from parainfer.training.data import split

    labels = ["a"] * 60 + ["b"] * 30 + ["c"] * 10
    tr, va = split(labels, 0.2, seed=0)
    assert len(va) == 20 and sorted([*tr, *va]) == list(range(100))
    assert [labels[i] for i in va].count("c") == 2  # stratified: 20% of each class
    assert (split(labels, 0.2, seed=0)[1] == va).all() and not (split(labels, 0.2, seed=1)[1] == va).all()
    with pytest.raises(UsageError, match="--validation 1.5"):
        split(labels, 1.5, seed=0)


def test_predictor_matches_sklearn_predict_proba(sk_model: tuple[Path, dict], vader_sample: Path) -> None:
    import skops.io as sio

    out, _ = sk_model
    texts = [r["text"] for r in read_jsonl(vader_sample)]
    predictor = build_predictor("classify", str(out))
    assert isinstance(predictor, SklearnPredictor)
    predictor.load()
    # beyond skops' defaults, the file holds only the calibration parts parainfer trusts
    assert set(sio.get_untrusted_types(file=out / "model.skops")) == set(SKLEARN_TRUSTED)
    pipe = sio.load(out / "model.skops", trusted=list(SKLEARN_TRUSTED))
    got, want = predictor.predict(texts), pipe.predict_proba(texts)
    assert [g["label"] for g in got] == list(pipe.predict(texts))
    assert np.abs(np.array([g["score"] for g in got]) - want.max(axis=1)).max() <= 1e-5


def test_untrusted_types_need_trust(tmp_path: Path) -> None:
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    pipe = make_pipeline(FunctionTransformer(operator.neg), LogisticRegression())
    pipe.fit(np.arange(20.0).reshape(10, 2), ["a", "b"] * 5)
    sio.dump(pipe, tmp_path / "m.skops")
    with pytest.raises(UsageError, match="_operator.neg.*--trust"):
        SklearnPredictor(tmp_path / "m.skops").load()
    trusted = SklearnPredictor(tmp_path / "m.skops", trust=True)
    trusted.load()
    assert trusted.labels == ["a", "b"]


def test_run_model_dir_on_two_workers(sk_model: tuple[Path, dict], vader_labelled: Path, tmp_path: Path) -> None:
    out, _ = sk_model
    result = tmp_path / "pred.jsonl"
    report = Job(JobConfig(input=str(vader_labelled), output=str(result), model=str(out), workers=2,
                           batch_size=64, quiet=True)).run()
    rows = read_jsonl(result)
    good = [r for r in read_jsonl(vader_labelled) if r.get("text")]
    assert [r["id"] for r in rows] == [r["id"] for r in good]  # input order, the null text left out
    assert report["model"]["class"] == "SklearnPredictor" and report["workers"] == 2
    assert [e["id"] for e in read_jsonl(report["errors_file"])] == ["bad-null-text"]
    assert json.loads(Path(f"{result}.parainfer-checkpoint.json").read_text())["finished"] is True
    accuracy = np.mean([r["label"] == r["input_label"] for r in rows if "input_label" in r])
    assert accuracy > 0.8  # mostly training texts


def test_cli_train_csv_multiclass_and_bad_options(tmp_path: Path) -> None:
    from parainfer.platform import datasets

    rows = read_jsonl(datasets.fetch("bbc"))[::15][:150]
    src = tmp_path / "bbc.csv"
    import csv

    with open(src, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["id", "body", "topic"])
        w.writeheader()
        for r in rows:
            w.writerow({"id": r["id"], "body": r["text"][:400], "topic": r["label"]})
    cmd = [sys.executable, "-m", "parainfer.cli", "train", str(src), "--text-column", "body", "--label-column",
           "topic", "--output", str(tmp_path / "bbc_model")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "validation accuracy" in done.stdout and "politics" in done.stdout
    manifest = json.loads((tmp_path / "bbc_model" / "parainfer-model.json").read_text())
    assert len(manifest["labels"]) == 5 and manifest["metrics"]["accuracy"] > 0.6
    assert manifest["command"].startswith("parainfer train")
    bad = subprocess.run(cmd[:-2] + ["--output", str(tmp_path / "x"), "--backend", "xgb"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "unknown backend 'xgb'; accepted: sklearn, head, keras" in bad.stderr


def test_serve_model_dir(sk_model: tuple[Path, dict]) -> None:
    from tests.serving.conftest import running_server

    out, _ = sk_model
    with running_server(task="classify", model=str(out), workers=1) as url:
        r = httpx.post(f"{url}/v1/classify", json={"input": ["I love it, wonderful!", "awful, I hate it"]})
    assert r.status_code == 200
    assert [d["label"] for d in r.json()["data"]] == ["positive", "negative"]
