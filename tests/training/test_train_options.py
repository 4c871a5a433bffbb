"""`parainfer train`'s tuning options and what it tells the user: --C, --class-weight and
--max-features change the saved model as they should; progress lines on stderr (sklearn, head,
keras, without TensorFlow's log lines); a wrong --label-column lists the columns found (exit 2);
dropped rows are written to the errors file and exit 1, as `run` does for failed records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from parainfer.models.sklearn_model import load_skops
from parainfer.training import train
from tests.conftest import read_jsonl


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "parainfer.cli", *args], capture_output=True, text=True, timeout=600,
                          check=False, env=env)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def clean_vader(vader_labelled: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """vader_labelled without its 3 bad rows: 400 rows."""
    rows = [r for r in read_jsonl(vader_labelled) if not str(r.get("id", "")).startswith("bad-")]
    return write_jsonl(tmp_path_factory.mktemp("opts") / "clean.jsonl", rows)


def svm_coefs(model_dir: Path) -> np.ndarray:
    """The calibrated svc's LinearSVC coefficients, one row per calibration fold."""
    clf = load_skops(model_dir / "model.skops").named_steps["clf"]
    return np.stack([c.estimator.coef_.ravel() for c in clf.calibrated_classifiers_])


def test_max_features_caps_the_saved_vocabulary(clean_vader: Path, tmp_path: Path) -> None:
    train(str(clean_vader), str(tmp_path / "all"), n_jobs=1)
    train(str(clean_vader), str(tmp_path / "capped"), max_features=50, n_jobs=1)
    sizes = {}
    for name in ("all", "capped"):
        pipe = load_skops(tmp_path / name / "model.skops")
        sizes[name] = {n: len(v.vocabulary_) for n, v in pipe.named_steps["features"].transformer_list}
        manifest = json.loads((tmp_path / name / "parainfer-model.json").read_text())
        assert manifest["training"]["features"] == sizes[name] and manifest["training"]["solver"] == "svc"
    assert sizes["capped"] == {"word": 50, "char": 50}
    assert sizes["all"]["word"] > 500 and sizes["all"]["char"] > 5000


def test_C_sets_the_regularisation(clean_vader: Path, tmp_path: Path) -> None:
    train(str(clean_vader), str(tmp_path / "weak"), C=10.0, n_jobs=1)
    train(str(clean_vader), str(tmp_path / "strong"), C=0.01, n_jobs=1)
    weak, strong = svm_coefs(tmp_path / "weak"), svm_coefs(tmp_path / "strong")
    assert np.linalg.norm(weak, axis=1).min() > 5 * np.linalg.norm(strong, axis=1).max()
    assert json.loads((tmp_path / "strong" / "parainfer-model.json").read_text())["training"]["C"] == 0.01


def test_class_weight_balanced_favours_the_rare_class(clean_vader: Path, tmp_path: Path) -> None:
    rows = read_jsonl(clean_vader)
    pos = [r for r in rows if r["label"] == "positive"]
    neg = [r for r in rows if r["label"] == "negative"]
    src = write_jsonl(tmp_path / "skewed.jsonl", pos + neg[:len(pos) // 5])  # 5 positives to 1 negative
    texts = [r["text"] for r in rows]
    predicted = {}
    for weight in ("none", "balanced"):
        train(str(src), str(tmp_path / weight), class_weight=weight, n_jobs=1)
        pipe = load_skops(tmp_path / weight / "model.skops")
        assert pipe.named_steps["clf"].estimator.class_weight == (None if weight == "none" else "balanced")
        predicted[weight] = int((pipe.predict(texts) == "negative").sum())
    assert predicted["balanced"] > predicted["none"], predicted


def test_bad_option_values_are_refused(clean_vader: Path, tmp_path: Path) -> None:
    for args, message in ((["--C", "0"], "--C 0.0 must be > 0"),
                          (["--class-weight", "heavy"], "--class-weight 'heavy': accepted: none, balanced"),
                          (["--max-features", "0"], "--max-features 0 must be >= 1"),
                          (["--solver", "adam"], "unknown --solver 'adam'; accepted: svc, sgd, lbfgs")):
        done = cli("train", str(clean_vader), "-o", str(tmp_path / "m"), "--overwrite", *args)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)


def test_sklearn_progress_on_stderr_and_exit_0(clean_vader: Path, tmp_path: Path) -> None:
    done = cli("train", str(clean_vader), "-o", str(tmp_path / "m"))
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert all(line.startswith("[train ") for line in lines), done.stderr
    text = "\n".join(lines)
    for step in ("400 rows (0 bad), 2 classes: 320 to train on, 80 to validate", "vectorizing 320 texts",
                 "fitting svc (C=0.5, class_weight=none) on 320 x ", "fitted in ", "saved "):
        assert step in text, (step, text)
    assert "validation accuracy" in done.stdout and not (tmp_path / "m" / "train.errors.jsonl").exists()
    assert cli("train", str(clean_vader), "-o", str(tmp_path / "q"), "--quiet").stderr == ""


def test_wrong_label_column_lists_the_columns_found(clean_vader: Path, tmp_path: Path) -> None:
    done = cli("train", str(clean_vader), "-o", str(tmp_path / "m"), "--label-column", "sentiment")
    assert done.returncode == 2, done.stderr
    assert ("has no label column 'sentiment'; columns found: 'id', 'text', 'label', 'score' (choose one with "
            "--label-column)") in done.stderr, done.stderr
    assert "see the errors file" not in done.stderr and "Traceback" not in done.stderr


def test_dropped_rows_go_to_the_errors_file_and_exit_1_like_run(vader_labelled: Path, tmp_path: Path) -> None:
    model = tmp_path / "m"
    done = cli("train", str(vader_labelled), "-o", str(model), "--jobs", "1")
    errors = model / "train.errors.jsonl"
    assert done.returncode == 1, done.stderr
    assert f"3 bad rows left out; see {errors}" in done.stderr
    assert [e["id"] for e in read_jsonl(errors)] == ["bad-null-text", "bad-empty-label", "bad-no-label"]
    assert json.loads((model / "parainfer-model.json").read_text())["training"]["bad_rows"] == 3
    # run on the same file (3 rows it cannot use: one without text) exits 1 for its failed record too
    out = tmp_path / "pred.jsonl"
    ran = cli("run", str(vader_labelled), "--model", str(model), "--output", str(out), "--workers", "1", "--quiet")
    assert ran.returncode == done.returncode == 1, ran.stderr


def test_head_progress_on_stderr(clean_vader: Path, tmp_path: Path) -> None:
    rows = read_jsonl(clean_vader)[::5]  # 80 rows
    src = write_jsonl(tmp_path / "small.jsonl", rows)
    done = cli("train", str(src), "-o", str(tmp_path / "head"), "--backend", "head", "--workers", "1")
    assert done.returncode == 0, done.stderr
    assert "embedding 80 texts with all-MiniLM-L6-v2" in done.stderr
    assert "embedded 80 / 80 texts" in done.stderr and "fitting the logistic-regression head" in done.stderr


def test_keras_on_tensorflow_prints_epochs_and_no_tensorflow_logs(clean_vader: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
    env["KERAS_BACKEND"] = "tensorflow"
    src = write_jsonl(tmp_path / "small.jsonl", read_jsonl(clean_vader)[::2])
    done = cli("train", str(src), "-o", str(tmp_path / "k"), "--backend", "keras", "--epochs", "2", env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert [line for line in lines if not line.startswith("[train ")] == [], done.stderr
    assert sum(" epoch " in line for line in lines) == 2 and "epoch 2/2: loss " in done.stderr
