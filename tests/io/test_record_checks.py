"""No record stops a job: values that would crash the driver later are quarantined where they
enter, from every format; whole-file encoding slips are one clear usage error."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from parainfer.errors import UsageError
from parainfer.io.record_check import MAX_DEPTH, check_row
from parainfer.io.sinks import dumps_bytes
from parainfer.io.sources import _stdin_rows, open_source
from parainfer.records import Record, RecordError

GOOD = '{"id": "g%d", "text": "fine text %d"}'
BAD_LINES = {
    "surrogate in text": '{"id": "s1", "text": "a \\ud800 b"}',
    "surrogate in another column": '{"id": "s2", "text": "ok", "note": ["x", "\\udfff"]}',
    "surrogate in a key": '{"id": "s3", "text": "ok", "\\ud800k": 1}',
    "100,000-deep array": '{"id": "d1", "text": "ok", "deep": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "deeper than the sink writes": '{"id": "d2", "text": "ok", "deep": ' + "[" * 300 + "]" * 300 + "}",
    "NaN": '{"id": "n1", "text": "ok", "score": NaN}',
    "Infinity": '{"id": "n2", "text": "ok", "score": -Infinity}',
}


def test_jsonl_bad_values_are_errors_and_the_good_records_are_kept(tmp_path: Path) -> None:
    lines = []
    for i, bad in enumerate(BAD_LINES.values()):
        lines += [GOOD % (i, i), bad]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    items = list(open_source(str(path)))
    records = [r for r in items if isinstance(r, Record)]
    errors = [r for r in items if isinstance(r, RecordError)]
    assert [r.id for r in records] == [f"g{i}" for i in range(len(BAD_LINES))]
    assert [e.line for e in errors] == list(range(2, 2 * len(BAD_LINES) + 1, 2))
    reasons = [e.reason for e in errors]
    assert all("surrogate" in r for r in reasons[:3])
    assert "nested too deep" in reasons[3] and f"more than {MAX_DEPTH} levels" in reasons[4]
    assert "NaN is not a JSON number" in reasons[5] and "-Infinity is not a JSON number" in reasons[6]
    for r in records:  # every record that passed can be written by the sinks
        dumps_bytes({"id": r.id, "text": r.text, **r.extra})


def test_depth_at_the_limit_passes_and_one_more_fails() -> None:
    def nest(n: int) -> list:
        v: list = []
        for _ in range(n - 1):
            v = [v]
        return v

    assert check_row({"x": nest(MAX_DEPTH)}) is None
    assert "levels" in check_row({"x": nest(MAX_DEPTH + 1)})
    dumps_bytes({"x": nest(MAX_DEPTH)})


def test_stdin_gets_the_same_checks_and_a_utf16_stream_is_refused() -> None:
    raw = (GOOD % (0, 0) + "\n" + BAD_LINES["surrogate in text"] + "\n").encode()
    rows = list(_stdin_rows(io.BytesIO(raw)))
    assert isinstance(rows[0][1], dict) and "surrogate" in rows[1][1]
    with pytest.raises(UsageError, match="UTF-16.*UTF-8 only"):
        list(_stdin_rows(io.BytesIO((GOOD % (0, 0) + "\n").encode("utf-16"))))


@pytest.mark.parametrize("name, data, message", [
    ("in.jsonl", (GOOD % (0, 0) + "\n").encode("utf-16"), "UTF-16 .*reads UTF-8 only"),
    ("in.csv", "id,text\n1,hi\n".encode("utf-32"), "UTF-32 .*reads UTF-8 only"),
    ("in.txt", "hello\n".encode("utf-16-be"), "NUL bytes"),
    ("in.jsonl", (GOOD % (0, 0) + "\r" + GOOD % (1, 1) + "\r").encode(), "CR-only line ends"),
    ("in.csv", b"id;text\r1;hi\r", "CR-only line ends"),
    ("in.csv", b"id;text\n1;hi\n", "separated by ';': parainfer reads comma-separated CSV"),
])
def test_whole_file_encoding_slips_are_one_usage_error(tmp_path: Path, name: str, data: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(UsageError, match=message):
        open_source(str(path))


def test_crlf_and_utf8_bom_still_read(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (GOOD % (0, 0) + "\r\n" + GOOD % (1, 1) + "\r\n").encode())
    assert [r.id for r in open_source(str(path))] == ["g0", "g1"]


def test_csv_with_invalid_utf8_fails_only_its_row(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"id,text\n1,good\n2,bad \xff here\n3,also good\n")
    items = list(open_source(str(path)))
    assert [type(i).__name__ for i in items] == ["Record", "RecordError", "Record"]


def test_parquet_with_invalid_utf8_fails_only_its_row(tmp_path: Path) -> None:
    text = pa.array([b"ok", b"bad \xff\xfe", b"fine"], pa.binary()).view(pa.string())  # not validated
    pq.write_table(pa.table({"id": [1, 2, 3], "text": text}), tmp_path / "in.parquet")
    items = list(open_source(str(tmp_path / "in.parquet")))
    assert [type(i).__name__ for i in items] == ["Record", "RecordError", "Record"]
    assert items[1].line == 2 and "could not be read" in items[1].reason


@pytest.mark.parametrize("name, content", [
    ("in.jsonl", '{"key": 1, "text": "hi"}\n'),
    ("in.csv", "key,text\n1,hi\n"),
    ("in.parquet", None),
])
def test_a_mistyped_id_column_is_an_error(tmp_path: Path, name: str, content: str | None) -> None:
    path = tmp_path / name
    if content is None:
        pq.write_table(pa.table({"key": [1], "text": ["hi"]}), path)
    else:
        path.write_text(content)
    with pytest.raises(UsageError, match="no id column 'kye'.*'key'"):
        open_source(str(path), id_column="kye")
    assert [r.id for r in open_source(str(path), id_column="key")] == [1 if name != "in.csv" else "1"]
    assert [r.id for r in open_source(str(path))] == [1 if name != "in.csv" else 2]  # default: line numbers


def test_a_record_that_raises_while_it_is_made_is_quarantined(tmp_path: Path) -> None:
    class Odd(dict):
        def get(self, *a):  # a row whose columns raise when read
            raise RuntimeError("unreadable")

    from parainfer.io.sources import Source

    src = Source("x", lambda: iter([(1, Odd(text="a")), (2, {"text": "b"})]), "text", "id")
    items = list(src)
    assert isinstance(items[0], RecordError) and "unreadable" in items[0].reason
    assert isinstance(items[1], Record)


def test_bad_records_do_not_stop_a_job(tmp_path: Path) -> None:
    import subprocess
    import sys

    lines = [GOOD % (i, i) for i in range(50)] + list(BAD_LINES.values()) + [GOOD % (99, 99)]
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("\n".join(lines) + "\n")
    proc = subprocess.run([sys.executable, "-m", "parainfer.cli", "run", str(src), "-o", str(out), "--model",
                           "parainfer.testing:echo", "--workers", "1", "-q"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [f"g{i}" for i in range(50)] + ["g99"]
    errors = (tmp_path / "out.errors.jsonl").read_text().splitlines()
    assert len(errors) == len(BAD_LINES)


def test_a_row_the_output_format_cannot_hold_fails_alone(tmp_path: Path) -> None:
    import csv
    import subprocess
    import sys

    rows = [{"id": f"r{i}", "text": f"text {i}"} for i in range(30)]
    rows[10]["surprise"] = "a column the CSV header (from the first row) lacks"
    src, out = tmp_path / "in.jsonl", tmp_path / "out.csv"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = subprocess.run([sys.executable, "-m", "parainfer.cli", "run", str(src), "-o", str(out), "--model",
                           "parainfer.testing:echo", "--workers", "1", "-q"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert [r["id"] for r in csv.DictReader(out.open())] == [f"r{i}" for i in range(30) if i != 10]
    (err,) = [json.loads(line) for line in (tmp_path / "out.errors.jsonl").read_text().splitlines()]
    assert err["id"] == "r10" and err["line"] == 11 and "surprise" in err["reason"]
