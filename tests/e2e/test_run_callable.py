"""`parainfer run` end to end with cheap callable models: order, formats, errors, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import read_jsonl


def parainfer(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "parainfer.cli", *args], capture_output=True, text=True,
                          input=stdin, timeout=300)


@pytest.fixture()
def mixed_input(tmp_path: Path) -> Path:
    """2,000 records of varied length with three bad lines among them."""
    lines = [json.dumps({"id": f"r{i}", "text": "word " * (1 + (i * 37) % 90), "k": i}) for i in range(2000)]
    lines[100] = "{not json"
    lines[500] = json.dumps({"id": "r500", "text": None})
    lines[900] = json.dumps({"id": "r900", "text": ""})
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_output_in_input_order_with_bad_records_quarantined(mixed_input: Path, tmp_path: Path) -> None:
    out, report, errors = tmp_path / "out.jsonl", tmp_path / "r.json", tmp_path / "err.jsonl"
    proc = parainfer("run", str(mixed_input), "-o", str(out), "--model", "parainfer.testing:echo",
                     "--workers", "2", "--batch-size", "16", "--bucket-window", "256",
                     "--report", str(report), "--errors", str(errors))
    assert proc.returncode == 1, proc.stderr
    rows = read_jsonl(out)
    expected_ids = [f"r{i}" for i in range(2000) if i not in (100, 500, 900)]
    assert [r["id"] for r in rows] == expected_ids
    assert all(r["length"] == len(r["text"]) and r["k"] == int(r["id"][1:]) for r in rows)
    errs = read_jsonl(errors)
    assert [e["line"] for e in errs] == [101, 501, 901]
    assert "JSON" in errs[0]["reason"] and "null" in errs[1]["reason"] and "empty" in errs[2]["reason"]
    rep = json.loads(report.read_text())
    assert rep["records"] == 2000 and rep["failed_records"] == 3 and rep["workers"] == 2
    assert sum(w["records"] for w in rep["per_worker"]) == 1997
    assert rep["tasks"] == len(rep["timeline"])
    for key in ("t_create_s", "t_schedule_s", "t_execute_s", "t_wait_s", "speedup", "efficiency", "imbalance",
                "throughput_records_per_s", "wall_s", "truncated_records"):
        assert key in rep
    assert "3 records failed" in proc.stderr


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_csv_and_parquet_round_trip(fmt: str, tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("".join(f"line number {i} " + "x" * (i % 50) + "\n" for i in range(1, 301)))
    out = tmp_path / f"out.{fmt}"
    proc = parainfer("run", str(src), "-o", str(out), "--model", "parainfer.testing:echo", "--workers", "2", "-q")
    assert proc.returncode == 0, proc.stderr
    if fmt == "parquet":
        table = pq.read_table(out).to_pylist()
    else:
        import csv

        table = list(csv.DictReader(out.open()))
    assert [int(r["id"]) for r in table] == list(range(1, 301))
    assert [int(r["length"]) for r in table] == [len(f"line number {i} " + "x" * (i % 50)) for i in range(1, 301)]


def test_stdin_to_stdout() -> None:
    stdin = "".join(json.dumps({"id": i, "text": "abc" * i}) + "\n" for i in range(1, 50))
    proc = parainfer("run", "-", "-o", "-", "--model", "parainfer.testing:echo", "--workers", "1", "-q",
                     stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["length"] for r in rows] == [3 * i for i in range(1, 50)]


@pytest.mark.parametrize("args, needle", [
    (["missing.jsonl", "-o", "o.jsonl"], "missing.jsonl"),
    (["in.xlsx", "-o", "o.jsonl"], ".xlsx"),
    (["in.jsonl", "-o", "o.jsonl", "--model", "no-such-model"], "no-such-model"),
    (["in.jsonl", "-o", "o.jsonl", "--task", "summarize"], "summarize"),
    (["in.jsonl", "-o", "o.jsonl", "--policy", "fastest"], "fastest"),
    (["in.jsonl", "-o", "o.jsonl", "--dtype", "fp8"], "fp8"),
    (["in.csv", "-o", "o.jsonl", "--text-column", "body"], "body"),
    (["in.jsonl", "-o", "o.jsonl", "--model", "nosuchmodule_xyz:f"], "nosuchmodule_xyz"),
    (["in.jsonl", "-o", "o.jsonl", "--device", "gpu"], "error: unknown device 'gpu'; accepted: cpu, cuda"),
    (["in.jsonl", "-o", "o.jsonl", "--text-column", "body"], "no text column 'body' in its first row"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], needle: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("in.jsonl").write_text('{"id": 1, "text": "hi"}\n')
    Path("in.xlsx").write_text("x")
    Path("in.csv").write_text("id,text\n1,hi\n")
    proc = parainfer("run", *args)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, needle", [
    (["in.jsonl"], "Missing option '--output'"),
    (["in.jsonl", "-o", "o.jsonl", "--workers", "two"], "--workers 'two': expected a count N"),
    (["in.jsonl", "-o", "o.jsonl", "--bogus"], "No such option: --bogus"),
])
def test_command_line_syntax_errors_exit_2_without_a_traceback(args: list[str], needle: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("in.jsonl").write_text('{"id": 1, "text": "hi"}\n')
    proc = parainfer("run", *args)
    assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
