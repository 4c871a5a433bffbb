"""All policies through the real engine: identical output, and a 3x straggler.

The straggler uses ``parainfer.testing:sleepy`` (sleeps per token; the worker named by
PARAINFER_TEST_SLOW_WORKER is 3x slower), so the test measures placement, not CPU contention.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parainfer.config import JobConfig
from parainfer.batch.job import Job
from parainfer.models.python_callable import CallablePredictor
from tests.conftest import read_jsonl


@pytest.fixture(scope="module")
def texts_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("straggler") / "in.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": "tok " * (2 + (i * 13) % 30)}) + "\n" for i in range(2400)))
    return path


def run(src: Path, out: Path, policy: str, workers: int, monkeypatch: pytest.MonkeyPatch) -> tuple[list, dict]:
    monkeypatch.setenv("PARAINFER_TEST_SLOW_WORKER", "2")
    monkeypatch.setenv("PARAINFER_TEST_SLOWDOWN", "3")
    monkeypatch.setenv("PARAINFER_TEST_MS_PER_TOKEN", "0.12")
    cfg = JobConfig(input=str(src), output=str(out), workers=workers, policy=policy, batch_size=16,
                    bucket_window=512, quiet=True)
    report = Job(cfg, CallablePredictor("parainfer.testing:sleepy")).run()
    return read_jsonl(out), report


@pytest.fixture(scope="module")
def straggler_runs(texts_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    monkeypatch = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("runs")
    try:
        return {p: run(texts_file, tmp / f"{p}.jsonl", p, 3, monkeypatch) for p in ("static", "dynamic", "lpt", "steal")}
    finally:
        monkeypatch.undo()


def test_all_policies_give_identical_output(straggler_runs: dict) -> None:
    outputs = {p: rows for p, (rows, _) in straggler_runs.items()}
    assert len(outputs["static"]) == 2400
    for rows in outputs.values():
        assert rows == outputs["static"]


@pytest.mark.parametrize("policy", ["dynamic", "lpt", "steal"])
def test_adaptive_policies_absorb_a_3x_straggler(straggler_runs: dict, policy: str) -> None:
    _, report = straggler_runs[policy]
    assert report["imbalance"] <= 1.10, report["per_worker"]
    tokens = [sum(t[5] for t in report["timeline"] if t[1] == w) for w in range(3)]
    assert tokens[2] < 0.6 * min(tokens[:2])  # the slow worker was given less work


def test_static_shows_the_straggler(straggler_runs: dict) -> None:
    _, static = straggler_runs["static"]
    _, dynamic = straggler_runs["dynamic"]
    assert static["imbalance"] > 1.4
    assert static["t_parallel_s"] > 1.3 * dynamic["t_parallel_s"]


def test_timeline_covers_every_task(straggler_runs: dict) -> None:
    _, report = straggler_runs["lpt"]
    assert len(report["timeline"]) == report["tasks"]
    assert sum(t[4] for t in report["timeline"]) == 2400
    for task, worker, start, end, records, tokens, padded, *_ in report["timeline"]:
        assert 0 <= worker < 3 and 0 <= start <= end <= report["t_parallel_s"] + 1e-3
        assert records <= tokens <= padded


def test_all_policies_identical_on_real_data_with_the_real_model(vader_sample: Path, tmp_path: Path) -> None:
    """The default classifier on 300 VADER texts: every policy writes the same output."""
    outputs = {}
    for policy in ("static", "dynamic", "lpt", "steal"):
        out = tmp_path / f"{policy}.jsonl"
        Job(JobConfig(input=str(vader_sample), output=str(out), workers=2, policy=policy, batch_size=16,
                      dtype="float32", quiet=True)).run()
        outputs[policy] = [(r["id"], r["label"], round(r["score"], 4)) for r in read_jsonl(out)]
    assert len(outputs["static"]) == 300
    assert all(rows == outputs["static"] for rows in outputs.values())
