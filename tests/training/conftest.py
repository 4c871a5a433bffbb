"""Small real labelled files for the training tests (VADER and BBC subsets, with bad rows)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def vader_labelled(vader_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400 VADER rows taken evenly across the file, plus 3 bad rows (null text, empty label,
    no label) at known places, as JSONL."""
    rows = [json.loads(line) for line in vader_path.read_text(encoding="utf-8").splitlines()]
    rows = rows[:: len(rows) // 400][:400]
    rows.insert(10, {"id": "bad-null-text", "text": None, "label": "positive"})
    rows.insert(20, {"id": "bad-empty-label", "text": "fine words", "label": "  "})
    rows.insert(30, {"id": "bad-no-label", "text": "more words"})
    out = tmp_path_factory.mktemp("train") / "vader400.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out
