"""Sharded mode's output parts (io.part_sinks): the format of an output path, the CSV part under
the job's header, the Parquet part under the job's schema (a row that does not fit fails alone),
and an output folder that parainfer did not write is never touched."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from parainfer.config import JobConfig
from parainfer.batch.job import Job
from parainfer.errors import UsageError
from parainfer.io.shards.part_sinks import csv_header_line, open_part, output_format


def test_output_format_of_files_and_folders(tmp_path: Path) -> None:
    cases = {"a.jsonl": ".jsonl", "a.ndjson": ".jsonl", "a.CSV": ".csv", "a.parquet": ".parquet", "d/": ".jsonl",
             "d.parquet/": ".parquet", "d.csv/": ".csv", "runs.v2/": ".jsonl", str(tmp_path): ".jsonl"}
    assert {k: output_format(k) for k in cases} == cases
    with pytest.raises(UsageError, match="not '.txt'"):
        output_format("a.txt")


def test_csv_part_under_the_jobs_header(tmp_path: Path) -> None:
    header = ["id", "text", "length"]
    sink = open_part(str(tmp_path / "p.csv"), ".csv", "id", "text", header, with_header=True)
    with pytest.raises(ValueError, match=r"columns \['extra'\] not in the CSV header"):
        sink.write_rows([{"id": "a", "text": "x", "length": 1, "extra": 2}])
    sink.write_rows([{"id": "b", "text": "y"}])  # a missing column is an empty cell, as in record mode
    sink.close()
    assert (tmp_path / "p.csv").read_bytes() == csv_header_line(header) + b"b,y,\r\n"
    assert sink.header == header
    bare = open_part(str(tmp_path / "q.csv"), ".csv", "id", "text")  # no header given: the first row's; no line
    bare.write_rows([{"text": "y", "id": "c", "n": 3}])
    bare.close()
    assert (tmp_path / "q.csv").read_bytes() == b"c,y,3\r\n" and bare.header == ["id", "text", "n"]


def test_parquet_part_rejects_a_row_that_does_not_fit_the_schema(tmp_path: Path) -> None:
    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("length", pa.int64())])
    sink = open_part(str(tmp_path / "p.parquet"), ".parquet", "id", "text", schema.serialize().to_pybytes())
    with pytest.raises(ValueError, match="column 'length' is int64 in the Parquet schema .* value is str 'long'"):
        sink.write_rows([{"id": "a", "text": "x", "length": "long"}])
    sink.write_rows([{"id": "b", "text": "y", "length": 1}])
    sink.close()
    assert pq.read_table(tmp_path / "p.parquet").to_pylist() == [{"id": "b", "text": "y", "length": 1}]
    assert sink.bytes_written == (tmp_path / "p.parquet").stat().st_size
    empty = open_part(str(tmp_path / "e.parquet"), ".parquet", "id", "text")
    empty.close()
    assert empty.bytes_written == 0 and empty.header is None  # no rows: an empty part, dropped at the end


def test_a_folder_parainfer_did_not_write_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": f"t{i}"}) + "\n" for i in range(20)))
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    config = JobConfig(input=str(src), output=f"{folder}/", model="parainfer.testing:echo", workers=1, quiet=True)
    with pytest.raises(UsageError, match="not empty and has no manifest.json"):
        Job(config).run()
    assert (folder / "notes.txt").read_text() == "keep me"
    with pytest.raises(UsageError, match="only sharded mode keeps parts in a folder"):
        Job(config.model_copy(update={"shard_mode": "off"})).run()
