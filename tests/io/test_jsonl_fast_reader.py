"""The fused JSONL record reader makes the same records and errors as the general path."""

from __future__ import annotations

from pathlib import Path

from parainfer.io.sources import open_source


def test_fast_jsonl_reader_equals_the_general_path(tmp_path: Path) -> None:
    lines = [b'\xef\xbb\xbf{"id": 1, "text": "bom"}', b"", b"   ", b'{"id": null, "text": "no id"}',
             b'{"text": ""}', b'{"text": "  "}', b'{"text": 5}', b'{"x": 1}', b"[1,2]", b"not json",
             b'{"id": 12345678901234567890, "text": "big"}', b'{"text": "a", "n": 1e400}',
             b'{"text": "deep", "d": ' + b"[" * 300 + b"]" * 300 + b"}", b"\xff\xfe",
             b'{"text": "ok", "label": "x", "id": "k"}', b'{"text": null}', b'{"id": 3, "text": "last \\u00e9"}']
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    fast = open_source(str(path))
    general = open_source(str(path))
    general.jsonl_file = False
    got, want = list(fast), list(general)
    assert fast.jsonl_file and got == want and fast.columns == general.columns
    assert [item.seq for item in got] == list(range(len(got))) and len(got) == 15  # blank lines take no seq
