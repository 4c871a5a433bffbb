"""open_source: formats, per-record faults (with line numbers), file-level errors, streaming."""

import hashlib
import io
import itertools
import json
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from parainfer.errors import UsageError
from parainfer.io.sources import open_source
from parainfer.records import Record, RecordError


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return str(path)


def errors(source):
    """{line: reason} of the RecordErrors, checking that seq counts every row."""
    items = list(source)
    assert [item.seq for item in items] == list(range(len(items)))
    return {e.line: e.reason for e in items if isinstance(e, RecordError)}


def test_jsonl_records_in_order_with_extra_and_default_id(tmp_path):
    path = write(tmp_path, "in.jsonl", '{"id": "a", "text": "hi", "lang": "en", "n": 1}\n'
                                       '\n'  # a blank line is not a row
                                       '{"text": "bye", "lang": "fr"}\n')
    source = open_source(path)
    assert list(source) == [Record(0, "a", "hi", {"lang": "en", "n": 1}, 1),
                            Record(1, 3, "bye", {"lang": "fr"}, 3)]  # no id: the line number
    assert source.columns == ["id", "text", "lang", "n"]


def test_jsonl_other_column_names_and_ndjson(tmp_path):
    path = write(tmp_path, "in.ndjson", '{"key": 7, "body": "x", "text": "kept"}\n')
    assert list(open_source(path, text_column="body", id_column="key")) == [
        Record(0, 7, "x", {"text": "kept"}, 1)]


def test_jsonl_faults_name_the_value_and_the_line(tmp_path):
    lines = [b'{"text": "ok"}', b'{"text": ', b'[1, 2]', b'{"body": "x", "id": 4}',
             b'{"text": null}', b'{"text": "  "}', b'{"text": 42}', b'{"text": "caf\xe9"}',
             b'"just a string"', b'{"text": "fine too"}']
    got = errors(open_source(write(tmp_path, "in.jsonl", b"\n".join(lines) + b"\n")))
    assert sorted(got) == [2, 3, 4, 5, 6, 7, 8, 9]
    assert "not valid JSON" in got[2]
    assert "JSON array" in got[3] and "expected an object" in got[3]
    assert "missing text column 'text'" in got[4] and "'body', 'id'" in got[4]
    assert "null text" in got[5]
    assert "empty text" in got[6]
    assert "non-string text" in got[7] and "int" in got[7]
    assert got[8] == "invalid UTF-8: byte 0xe9 at column 14"
    assert "JSON string" in got[9]


def test_missing_text_keeps_the_id_in_the_error(tmp_path):
    data = '{"id": "r0", "text": "fine"}\n{"id": "r1", "body": "x"}\n'
    ok, err = list(open_source(write(tmp_path, "in.jsonl", data)))
    assert (err.seq, err.line, err.id, err.text) == (1, 2, "r1", None)
    assert "missing text column 'text' (columns found: 'id', 'body')" in err.reason


def test_a_text_column_missing_from_the_first_jsonl_row_is_a_usage_error(tmp_path):
    """Most likely a misnamed --text-column: said at once, before a model loads or a row fails."""
    path = write(tmp_path, "in.jsonl", 'not json\n{"id": "r1", "body": "x"}\n{"id": "r2", "text": "y"}\n')
    with pytest.raises(UsageError, match=r"no text column 'text' in its first row; columns found: 'id', 'body'"):
        open_source(path)
    assert len(list(open_source(path, text_column="body"))) == 3


def test_invalid_utf8_fails_only_its_line(tmp_path):
    path = write(tmp_path, "in.txt", b"one\n\xff\xfe bad\nthree\r\n")
    items = list(open_source(path))
    assert items[0] == Record(0, 1, "one", {}, 1) and items[2] == Record(2, 3, "three", {}, 3)
    assert isinstance(items[1], RecordError) and items[1].line == 2
    assert items[1].reason == "invalid UTF-8: byte 0xff at column 1"


def test_txt_ids_are_line_numbers_and_empty_lines_fail(tmp_path):
    path = write(tmp_path, "in.txt", "\ufefffirst\n\n  \nlast")
    items = list(open_source(path))
    assert items[0] == Record(0, 1, "first", {}, 1) and items[3] == Record(3, 4, "last", {}, 4)
    assert [(e.line, "empty text" in e.reason) for e in items[1:3]] == [(2, True), (3, True)]


def test_csv_lines_count_the_header_and_multiline_rows(tmp_path):
    data = (b'id,text,lang\n'
            b'1,hello,en\n'
            b'2,"two\nlines",en\n'      # lines 3-4
            b'3,,en\n'                  # line 5: empty text
            b'4,caf\xe9,fr\n'           # line 6: invalid UTF-8
            b'5,too,many,fields\n'      # line 7
            b'\n'                       # blank: not a row
            b'6,"last, quoted",de\n')   # line 9
    source = open_source(write(tmp_path, "in.csv", data))
    items = list(source)
    assert source.columns == ["id", "text", "lang"]
    assert items[0] == Record(0, "1", "hello", {"lang": "en"}, 2)
    assert items[1] == Record(1, "2", "two\nlines", {"lang": "en"}, 3)
    assert items[5] == Record(5, "6", "last, quoted", {"lang": "de"}, 9)
    got = {e.line: e.reason for e in items if isinstance(e, RecordError)}
    assert sorted(got) == [5, 6, 7]
    assert "empty text" in got[5] and "invalid UTF-8" in got[6] and "4 fields" in got[7]


def test_parquet_faults_use_row_numbers(tmp_path):
    path = str(tmp_path / "in.parquet")
    pq.write_table(pa.table({"id": [10, 11, 12, 13], "text": ["a", None, " ", "d"],
                             "score": [0.5, 1.0, 1.5, 2.0]}), path, row_group_size=2)
    source = open_source(path)
    items = list(source)
    assert source.columns == ["id", "text", "score"]
    assert items[0] == Record(0, 10, "a", {"score": 0.5}, 1) and items[3] == Record(3, 13, "d", {"score": 2.0}, 4)
    assert (items[1].line, items[1].id) == (2, 11) and "null text" in items[1].reason
    assert items[2].line == 3 and "empty text" in items[2].reason


def test_parquet_non_string_text_names_the_type(tmp_path):
    path = str(tmp_path / "in.parquet")
    pq.write_table(pa.table({"text": [1.5]}), path)
    (err,) = list(open_source(path))
    assert "non-string text" in err.reason and "float" in err.reason and err.id == 1


@pytest.mark.parametrize("name, content, message", [
    ("missing.jsonl", None, "does not exist"),
    ("in.tsv", "a\tb\n", "'.tsv'"),
    ("in.csv", "id,body\n1,x\n", "no text column 'text'; columns found: 'id', 'body'"),
    ("in.csv", "", "is empty"),
    ("in.parquet", "not parquet", "not a readable Parquet file"),
])
def test_file_level_faults_raise_usage_error(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(".", r"\.")) as exc:
        open_source(str(path))
    if name == "in.tsv":
        assert ".jsonl, .ndjson, .csv, .parquet, .txt" in str(exc.value)


def test_parquet_without_text_column_and_directory(tmp_path):
    path = str(tmp_path / "in.parquet")
    pq.write_table(pa.table({"body": ["x"]}), path)
    with pytest.raises(UsageError, match="columns found: 'body'"):
        open_source(path)
    with pytest.raises(UsageError, match="is a directory"):
        open_source(str(tmp_path))


def test_stdin_is_jsonl_without_fingerprint(monkeypatch):
    stdin = io.TextIOWrapper(io.BytesIO(b'{"id": 1, "text": "a"}\nnot json\n'))
    monkeypatch.setattr("sys.stdin", stdin)
    source = open_source("-")
    assert source.fingerprint() is None
    items = list(source)
    assert items[0] == Record(0, 1, "a", {}, 1) and items[1].line == 2


def test_fingerprint_is_sha256_and_size(tmp_path):
    data = b'{"text": "a"}\n' * 1000
    path = write(tmp_path, "in.jsonl", data)
    assert open_source(path).fingerprint() == f"sha256:{hashlib.sha256(data).hexdigest()}:{len(data)}"
    (tmp_path / "in.jsonl").write_bytes(data + b'{"text": "b"}\n')
    assert open_source(path).fingerprint() != f"sha256:{hashlib.sha256(data).hexdigest()}:{len(data)}"


def test_a_file_source_can_be_read_twice(tmp_path):
    source = open_source(write(tmp_path, "in.jsonl", '{"text": "a"}\n{"text": "b"}\n'))
    assert list(source) == list(source)


N = 200_000


@pytest.fixture(scope="module")
def big_jsonl(tmp_path_factory):
    """A 200k-line JSONL file (~9 MB), written from a generator."""
    path = tmp_path_factory.mktemp("big") / "big.jsonl"
    with open(path, "w") as f:
        f.writelines(json.dumps({"id": i, "text": f"text number {i} " * 3}) + "\n" for i in range(N))
    return str(path)


def test_first_record_arrives_without_reading_the_file(big_jsonl):
    tracemalloc.start()
    first = next(iter(open_source(big_jsonl)))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert first.id == 0 and peak < 1_000_000  # the file is ~9 MB


def test_memory_stays_flat_over_the_whole_file(big_jsonl):
    it = iter(open_source(big_jsonl))
    next(it)
    tracemalloc.start()
    traced = sum(1 for _ in itertools.islice(it, 50_000))  # traced: slow, so a quarter
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1_000_000  # 50k records kept would take > 10 MB
    assert 1 + traced + sum(1 for _ in it) == N


@pytest.mark.parametrize("ext", ["csv", "txt", "parquet"])
def test_other_formats_stream_too(tmp_path, ext):
    path = tmp_path / f"big.{ext}"
    if ext == "parquet":
        pq.write_table(pa.table({"text": [f"t{i}" for i in range(N)]}), path, row_group_size=10_000)
    else:
        with open(path, "w") as f:
            f.write("text\n" if ext == "csv" else "")
            f.writelines(f"t{i}\n" for i in range(N))
    tracemalloc.start()
    first = next(iter(open_source(str(path))))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # all 200k rows as Python dicts would take ~50 MB; parquet decodes one 4096-row batch
    assert first.text == "t0" and peak < 5_000_000
    assert pa.default_memory_pool().bytes_allocated() < 5_000_000


def test_chat_messages_are_accepted_only_where_allowed_and_checked(tmp_path) -> None:
    good = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    lines = [{"id": 1, "text": good}, {"id": 2, "text": []}, {"id": 3, "text": [{"role": "user"}]},
             {"id": 4, "text": ["hi"]}]
    path = write(tmp_path, "in.jsonl", "".join(json.dumps(x) + "\n" for x in lines))
    items = list(open_source(path, allow_messages=True))
    assert isinstance(items[0], Record) and items[0].text == good
    assert "empty messages list" in items[1].reason
    assert "messages[0] has content None, expected a string" in items[2].reason
    assert "messages[0] is str 'hi'" in items[3].reason
    plain = list(open_source(path))  # classify / embed: texts only
    assert all(isinstance(x, RecordError) and "expected a string" in x.reason for x in plain)


def test_integers_beyond_64_bits_pass_through_exactly(tmp_path):
    """orjson reads them as floats; the reader keeps them as Python ints (found by a property test)."""
    path = write(tmp_path, "in.jsonl", '{"id": 1, "text": "x", "big": -9223372036854775809, "u": 18446744073709551616}\n')
    (rec,) = list(open_source(path))
    assert rec.extra == {"big": -9223372036854775809, "u": 18446744073709551616}
