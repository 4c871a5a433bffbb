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
    from parainfer import datasets

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
