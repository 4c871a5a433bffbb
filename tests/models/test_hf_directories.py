"""`--model DIR`: a local Hugging Face sequence-classification directory and an encoder directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from parainfer.config import JobConfig
from parainfer.batch.job import Job
from parainfer.errors import UsageError
from parainfer.models.hf_embed import default_embed_model_dir
from parainfer.models.registry import build_predictor
from tests.conftest import read_jsonl


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real BertForSequenceClassification directory: MiniLM's encoder with a 3-way head (seeded)."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(0)
    src = default_embed_model_dir()
    model = BertForSequenceClassification.from_pretrained(
        str(src), num_labels=3, id2label={0: "low", 1: "mid", 2: "high"}, label2id={"low": 0, "mid": 1, "high": 2})
    out = tmp_path_factory.mktemp("models") / "tiny-classifier"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(src)).save_pretrained(out)
    return out


def test_sequence_classifier_directory_end_to_end(classifier_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("a fine day\nterrible news\nthe cat sat\n")
    report = Job(JobConfig(input=str(src), output=str(tmp_path / "o.jsonl"), task="classify",
                           model=str(classifier_dir), workers=1, dtype="float32", quiet=True)).run()
    rows = read_jsonl(tmp_path / "o.jsonl")
    assert [r["id"] for r in rows] == [1, 2, 3]
    assert all(r["label"] in ("low", "mid", "high") and 1 / 3 <= r["score"] <= 1 for r in rows)
    assert report["model"]["class"] == "HFSequenceClassifierPredictor"
    direct = build_predictor("classify", str(classifier_dir), dtype="float32")
    direct.load()
    assert [r["label"] for r in direct.predict(["a fine day", "terrible news", "the cat sat"])] == \
        [r["label"] for r in rows]


def test_encoder_directory_as_embed_model(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "x", "text": "hello world"}) + "\n")
    Job(JobConfig(input=str(src), output=str(tmp_path / "o.jsonl"), task="embed",
                  model=str(default_embed_model_dir()), workers=1, dtype="float32", quiet=True)).run()
    (row,) = read_jsonl(tmp_path / "o.jsonl")
    assert len(row["embedding"]) == 384 and abs(np.linalg.norm(row["embedding"]) - 1) < 1e-4


def test_wrong_kind_of_directory_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="not a sequence classifier"):
        build_predictor("classify", str(default_embed_model_dir()))


def test_length_groups_give_each_text_the_vector_it_gets_alone(vader_sample: Path) -> None:
    """A batch mixing short and long texts is cut into length groups (less padding); every text
    still gets, in input order, the embedding it gets when run alone (fp32)."""
    from parainfer.models.hf_embed import HFEncoder

    texts = [json.loads(line)["text"] for line in vader_sample.read_text().splitlines()][:40]
    texts += ["ok", "word " * 150]  # very short and very long: certainly different groups
    encoder = HFEncoder(default_embed_model_dir(), dtype="float32")
    encoder.load()
    groups = list(encoder._length_groups(texts))
    assert len(groups) > 1 and sorted(r for rows, _ in groups for r in rows) == list(range(len(texts)))
    lengths = encoder.token_lengths(texts)
    padded = sum(b["input_ids"].numel() for _, b in groups)
    assert padded < len(texts) * min(max(lengths), 256)
    together = encoder.encode(texts)
    alone = np.stack([encoder.encode([t])[0] for t in texts])
    assert together.shape == (len(texts), 384)
    assert float(np.min(np.sum(together * alone, axis=1))) > 0.99999
