"""The driver never tokenises: it batches from estimates, workers send exact counts back.

Real model (the default classifier in float32) on a real VADER sample: the output equals the
model run directly in this process on the same texts, the report's token and truncation
figures equal an exact count by the tokenizer, and one very long text is cut to the
character budget before anything tokenises it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parainfer.config import JobConfig
from parainfer.batch.job import Job
from parainfer.counts import MAX_CHARS_PER_TOKEN
from parainfer.models.hf_classify import HeadClassifierPredictor
from tests.conftest import read_jsonl


@pytest.fixture(scope="module")
def reference() -> HeadClassifierPredictor:
    """The same model loaded in this process (the 'before': what the model says directly)."""
    predictor = HeadClassifierPredictor(dtype="float32")
    predictor.load()
    return predictor


def test_output_and_exact_counts_without_driver_tokenising(vader_sample: Path, tmp_path: Path,
                                                            reference: HeadClassifierPredictor) -> None:
    predictor = HeadClassifierPredictor(dtype="float32")
    out = tmp_path / "o.jsonl"
    report = Job(JobConfig(input=str(vader_sample), output=str(out), quiet=True, workers=2, batch_size=16,
                           max_batch_tokens=600), predictor=predictor).run()
    assert predictor._tokenizer is None  # the driver's copy never loaded a tokenizer
    texts = [r["text"] for r in read_jsonl(vader_sample)]
    rows = read_jsonl(out)
    want = reference.predict(texts)
    assert [r["label"] for r in rows] == [w["label"] for w in want]
    assert max(abs(r["score"] - w["score"]) for r, w in zip(rows, want)) < 1e-4
    full = [len(ids) for ids in reference._get_tokenizer()(texts)["input_ids"]]
    assert report["real_tokens"] == sum(min(n, 256) for n in full)
    assert report["truncated_records"] == sum(n > 256 for n in full)
    assert report["real_tokens"] <= report["padded_tokens"] <= 16 * 256 * report["tasks"]
    assert report["padding_efficiency"] == pytest.approx(report["real_tokens"] / report["padded_tokens"])
    learned = report["length_estimate"]
    fit = [(len(t), n) for t, n in zip(texts, full) if n <= 256]
    assert learned["tokens_per_char"] == pytest.approx(sum(n for _, n in fit) / sum(c for c, _ in fit), rel=1e-3)
    assert report["driver_busy_s"] > 0 and report["driver_us_per_record"] > 0
    parts = report["startup"]  # start-up split into its parts, each within the whole
    assert {"driver_setup_s", "worker_process_s", "imports_s", "tokenizer_s", "weights_s"} <= set(parts)
    assert parts["first_dispatch_s"] == pytest.approx(report["t_startup_s"], abs=1e-3)
    assert parts["first_ready_s"] <= parts["first_dispatch_s"] + 1e-3
    assert all(0 <= v <= parts["all_ready_s"] + 1e-3 for k, v in parts.items() if k != "first_dispatch_s")


def test_one_huge_text_is_cut_before_tokenising(tmp_path: Path, reference: HeadClassifierPredictor) -> None:
    budget = 256 * MAX_CHARS_PER_TOKEN
    huge = "what a lovely, sunny afternoon in the park " * (8_000_000 // 43)  # 8 MB
    src = tmp_path / "huge.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": t}) + "\n"
                           for i, t in enumerate(["fine", huge, huge[:budget], "awful"])))
    out = tmp_path / "o.jsonl"
    report = Job(JobConfig(input=str(src), output=str(out), quiet=True, workers=1, dtype="float32")).run()
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == [0, 1, 2, 3] and len(rows[1]["text"]) == len(huge)  # output row whole
    assert rows[1]["label"] == rows[2]["label"] and rows[1]["score"] == pytest.approx(rows[2]["score"], abs=1e-5)
    assert report["truncated_records"] == 2  # the huge text and its budget-long prefix exceed 256 tokens
    assert report["length_estimate"]["max_chars_per_record"] == budget
