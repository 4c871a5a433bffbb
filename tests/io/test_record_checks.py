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
from parainfer.io.input_checks import wide_encoding
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
    ("in.txt", "hello\n".encode("utf-16-be"), "UTF-16BE without a byte-order mark.*iconv -f UTF-16BE"),
    ("in.jsonl", (GOOD % (0, 0) + "\n").encode("utf-16-le"), "UTF-16LE without a byte-order mark"),
    ("in.csv", "id,text\n1,hi\n".encode("utf-32-le"), "UTF-32LE without a byte-order mark"),
    ("in.csv", "id,text\n1,hi\n".encode("utf-32-be"), "UTF-32BE without a byte-order mark"),
    ("in.txt", b"\x00\x93\xfe binary\n", "NUL bytes in a first line that is not UTF-8"),
    ("in.jsonl", (GOOD % (0, 0) + "\r" + GOOD % (1, 1) + "\r").encode(), "CR-only line ends"),
    ("in.csv", b"id;text\r1;hi\r", "CR-only line ends"),
    ("in.csv", b"id;text\n1;hi\n", "separated by ';': parainfer reads comma-separated CSV"),
])
def test_whole_file_encoding_slips_are_one_usage_error(tmp_path: Path, name: str, data: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(UsageError, match=message):
        open_source(str(path))


@pytest.mark.parametrize("name, data, expected", [
    ("in.jsonl", b'{"id": "n0", "text": "before\x00after"}\n' + (GOOD % (1, 1)).encode() + b"\n",
     [("n0", "Invalid control character at column 29"), ("g1", "fine text 1")]),
    ("in.jsonl", b'{"id": "n0", "text": "escaped \\u0000 is JSON"}\n', [("n0", "escaped \x00 is JSON")]),
    ("in.txt", b"first\x00line\nsecond\n", [(1, "first\x00line"), (2, "second")]),
    ("in.csv", b"id,text,n\x00te\nc1,a,1\n", [("c1", "a")]),  # a NUL in the header: read as UTF-8 too
])
def test_a_nul_in_the_first_line_of_a_utf8_file_is_read_as_utf8(tmp_path: Path, name: str, data: bytes,
                                                                expected: list[tuple]) -> None:
    """A NUL byte is a valid UTF-8 character: the file is UTF-8, not UTF-16. A raw NUL inside a
    JSON string is not JSON (RFC 8259 wants it escaped): that record fails alone, with its id;
    in TXT and CSV it is part of the text."""
    path = tmp_path / name
    path.write_bytes(data)
    got = [(x.id, x.text) if isinstance(x, Record) else (x.id, x.reason) for x in open_source(str(path))]
    assert [i for i, _ in got] == [i for i, _ in expected]
    for (_, value), (_, want) in zip(got, expected):
        assert want in value


def test_a_utf8_job_with_a_nul_in_its_first_line_runs_in_both_modes(tmp_path: Path) -> None:
    import subprocess
    import sys

    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"id": "n0", "text": "before\x00after"}\n' + "".join(GOOD % (i, i) + "\n" for i in range(1, 40)).encode())
    for mode in ("off", "on"):
        out = tmp_path / f"out-{mode}.jsonl"
        proc = subprocess.run([sys.executable, "-m", "parainfer.cli", "run", str(src), "-o", str(out), "--model",
                               "parainfer.testing:echo", "--workers", "1", "-q", "--shard-mode", mode],
                              capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [f"g{i}" for i in range(1, 40)]
        (err,) = [json.loads(line) for line in (tmp_path / f"out-{mode}.errors.jsonl").read_text().splitlines()]
        assert (err["line"], err["id"]) == (1, "n0") and "control character" in err["reason"]


def test_utf8_with_nul_characters_has_no_wide_encoding_pattern() -> None:
    assert wide_encoding(b'{"id": "a", "text": "x\x00y\x00\x00z"}\n') is None
    assert wide_encoding("\u00e9t\u00e9 \x00 caf\u00e9\n".encode()) is None
    for codec, name in (("utf-16-le", "UTF-16LE"), ("utf-16-be", "UTF-16BE"), ("utf-32-le", "UTF-32LE"),
                        ("utf-32-be", "UTF-32BE")):
        assert wide_encoding((GOOD % (0, 0)).encode(codec)) == name
        assert wide_encoding("d\u00e9j\u00e0 vu, caf\u00e9 cr\u00e8me".encode(codec)) == name  # Latin-1 text too


# Lines whose reading fails, each with the id its errors-file row must carry (None: not readable).
UNREADABLE = [
    ('{"id": "sur", "text": "a \\ud800 b"}', "sur"),
    ('{"id": "nan", "text": "x", "score": NaN}', "nan"),
    ('{"id": "ctl", "text": "a\tb"}', "ctl"),  # a raw control character inside a string
    ('{"id": 7, "text": "x", "note": "\\udfff"}', 7),
    ('{"text": "no id", "score": Infinity}', 5),  # no id column: the line number, as for a good row
    ('{"id": "\\ud800", "text": "x", "s": NaN}', None),  # the id itself is not valid Unicode
    ('[1, 2]', None),
    ('{"id": "cut", "text": ', None),
]


@pytest.mark.parametrize("ext", ["jsonl", "csv", "txt", "parquet"])
def test_error_rows_keep_a_readable_id(ext: str, tmp_path: Path) -> None:
    from parainfer.io.shards.plan import Shard, data_start
    from tests.io.test_shards import as_tuples, read_shards

    path = tmp_path / f"in.{ext}"
    if ext == "jsonl":
        lines = [line.encode() for line, _ in UNREADABLE]
        lines += [b'{"id": "utf", "text": "bad \xff here"}', b'{"id": "\xfe", "text": "x"}']
        path.write_bytes(b"\n".join(lines) + b"\n")
        expected = [want for _, want in UNREADABLE] + ["utf", None]
    elif ext == "csv":
        path.write_bytes(b"id,text\nc1,ok\nc2,bad \xff\nc3,a,b\n\xff,x\n")
        expected = ["c2", None, None]  # a wrong field count: which field is the id is not known
    elif ext == "txt":
        path.write_bytes(b"ok\nbad \xff\n")
        expected = [2]  # a TXT id is the line number
    else:
        text = pa.array([b"ok", b"bad \xff\xfe", b"fine"], pa.binary()).view(pa.string())
        pq.write_table(pa.table({"id": ["p1", "p2", "p3"], "text": text}), path)
        expected = ["p2"]
    items = list(open_source(str(path)))
    assert [e.id for e in items if isinstance(e, RecordError)] == expected
    if ext == "jsonl":
        assert [e.line for e in items if isinstance(e, RecordError)] == list(range(1, len(expected) + 1))
    # sharded mode's reader gives the same rows, ids included (one shard: a JSONL shard numbers its
    # lines from 1, so a row without an id would get its line in the shard)
    start, line = data_start(str(path))
    end = pq.ParquetFile(path).metadata.num_rows if ext == "parquet" else path.stat().st_size
    shard = Shard(start, end, 0 if ext == "jsonl" else line)
    assert read_shards(str(path), [shard], line) == as_tuples(items)


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
