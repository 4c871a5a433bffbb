"""`parainfer run` with the real built-in models on a real VADER sample.

Checks the consistency promise (N workers give the 1-worker output), the default
classifier's quality, and the ``--dtype auto`` tolerance against float32.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from parainfer.config import JobConfig
from parainfer.batch.job import Job
from tests.conftest import assert_labels_agree, read_jsonl, score_tolerance


def run_job(src: Path, out: Path, **options: object) -> tuple[list[dict], dict]:
    report = Job(JobConfig(input=str(src), output=str(out), quiet=True, **options)).run()
    return read_jsonl(out), report


@pytest.fixture(scope="module")
def classify_runs(vader_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("classify")
    return {n: run_job(vader_sample, tmp / f"w{n}.jsonl", task="classify", workers=n, batch_size=32)
            for n in (1, 2)}


def test_classify_two_workers_equal_one_worker(classify_runs: dict, vader_sample: Path) -> None:
    (one, rep1), (two, rep2) = classify_runs[1], classify_runs[2]
    ids = [r["id"] for r in read_jsonl(vader_sample)]
    assert [r["id"] for r in one] == ids and [r["id"] for r in two] == ids
    assert rep1["model"]["dtype"] == rep2["model"]["dtype"]
    assert_labels_agree(two, one, score_tolerance(rep1))  # float32: 1e-3; bf16 (--dtype auto on AMX): 0.02
    # Which worker ran what depends on which loaded first; together they ran every task once.
    assert rep2["workers"] == 2 and sum(w["tasks"] for w in rep2["per_worker"]) == rep2["tasks"]


def test_classify_output_columns_and_accuracy(classify_runs: dict) -> None:
    rows, report = classify_runs[2]
    assert list(rows[0])[:2] == ["id", "text"] and {"label", "score"} <= set(rows[0])
    assert all(r["label"] in ("positive", "negative") and 0.5 <= r["score"] <= 1.0 for r in rows)
    assert {r["label"] for r in rows} == {"positive", "negative"}
    assert report["model"]["class"] == "HeadClassifierPredictor"


def test_default_classifier_beats_chance_on_vader(classify_runs: dict, vader_sample: Path) -> None:
    rows, _ = classify_runs[1]
    truth = {r["id"]: r["label"] for r in read_jsonl(vader_sample)}
    assert all(r["input_label"] == truth[r["id"]] for r in rows)  # the gold column is kept
    accuracy = np.mean([r["input_label"] == r["label"] for r in rows])
    assert accuracy > 0.7, accuracy


@pytest.fixture(scope="module")
def embed_one_worker_fp32(vader_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """The rows of ``--task embed --workers 1 --dtype float32`` on the sample: the reference of
    both embedding tests below (run once, not once each)."""
    rows, rep = run_job(vader_sample, tmp_path_factory.mktemp("embed") / "e1.jsonl", task="embed", workers=1,
                        dtype="float32")
    assert rep["model"]["dtype"] == "float32"
    return rows


def test_embed_two_workers_within_1e5_of_one_worker(embed_one_worker_fp32: list[dict], vader_sample: Path,
                                                    tmp_path: Path) -> None:
    one = embed_one_worker_fp32
    two, rep = run_job(vader_sample, tmp_path / "e2.jsonl", task="embed", workers=2, dtype="float32")
    a = np.array([r["embedding"] for r in one])
    b = np.array([r["embedding"] for r in two])
    assert a.shape == (300, 384)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-4)
    assert np.abs(a - b).max() < 1e-5
    assert rep["model"]["dtype"] == "float32"


def test_auto_dtype_stays_within_tolerance_of_float32(embed_one_worker_fp32: list[dict], vader_sample: Path,
                                                      tmp_path: Path) -> None:
    ref = embed_one_worker_fp32
    auto, rep = run_job(vader_sample, tmp_path / "auto.jsonl", task="embed", workers=1, dtype="auto")
    a = np.array([r["embedding"] for r in ref])
    b = np.array([r["embedding"] for r in auto])
    cosine = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosine.min() >= 0.999, cosine.min()
    assert rep["model"]["dtype"] in ("bfloat16", "float32")


def test_long_texts_are_truncated_and_counted(tmp_path: Path) -> None:
    src = tmp_path / "long.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": "wonderful day " * (50 * i + 1)}) + "\n" for i in range(6)))
    rows, report = run_job(src, tmp_path / "o.jsonl", task="classify", workers=1)
    assert len(rows) == 6 and report["truncated_records"] == 3  # texts over 256 tokens
