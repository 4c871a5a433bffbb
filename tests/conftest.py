"""Shared fixtures: small real samples of the VADER dataset, offline settings."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def vader_path() -> Path:
    """The full VADER ground truth as JSONL (fetched once from PyPI into the user cache)."""
    from parainfer.platform import datasets

    return datasets.fetch("vader")


@pytest.fixture(scope="session")
def vader_sample(vader_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 VADER texts taken evenly across the four sources (tweets, reviews, ...)."""
    rows = [json.loads(line) for line in vader_path.read_text(encoding="utf-8").splitlines()]
    step = len(rows) // 300
    out = tmp_path_factory.mktemp("data") / "vader300.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows[::step][:300]), encoding="utf-8")
    return out


def read_jsonl(path: Path) -> list[dict]:
    """All rows of a JSONL file."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def assert_labels_agree(got: list[dict], want: list[dict], score_tol: float) -> None:
    """Classifier rows of two runs of the same texts agree: scores within ``score_tol``, and a
    label differs only on a near-tie (both top scores < 0.52: the two best classes within
    rounding, which batch composition can tip, above all in bfloat16)."""
    assert max(abs(a["score"] - b["score"]) for a, b in zip(got, want)) < score_tol
    flipped = [(a["id"], a["score"], b["score"]) for a, b in zip(got, want) if a["label"] != b["label"]]
    assert len(flipped) <= 2 and all(max(x, y) < 0.52 for _, x, y in flipped), flipped


def score_tolerance(report: dict) -> float:
    """How far one record's score may move with the batch it ran in: float32 rounding (1e-3), or
    bfloat16's ~3 significant digits (0.02, what the dtype check at load allows; models.md)."""
    return 0.02 if report["model"].get("dtype") == "bfloat16" else 1e-3


def sleepy_reports(tmp: Path, env: dict[str, str], **config) -> dict[int, Path]:
    """Run the ``parainfer.testing:sleepy`` model (cost set by ``env``, e.g.
    PARAINFER_TEST_MS_PER_TOKEN) on 1,500 texts of 3..42 tokens with 1 and 2 workers, batch 32;
    returns {workers: report path}. ``config``: more JobConfig fields (e.g. shard_mode)."""
    from parainfer.config import JobConfig
    from parainfer.batch.job import Job
    from parainfer.models.python_callable import CallablePredictor

    src = tmp / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": "tok " * (3 + (i * 7) % 40)}) + "\n" for i in range(1500)))
    mp = pytest.MonkeyPatch()
    for key, value in env.items():
        mp.setenv(key, value)
    reports = {}
    try:
        for n in (1, 2):
            reports[n] = tmp / f"r{n}.json"
            Job(JobConfig(input=str(src), output=str(tmp / f"o{n}.jsonl"), workers=n, batch_size=32,
                          report=str(reports[n]), quiet=True, **config),
                CallablePredictor("parainfer.testing:sleepy")).run()
    finally:
        mp.undo()
    return reports
