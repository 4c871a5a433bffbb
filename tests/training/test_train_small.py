"""`parainfer train` at its limits: too little data is refused with one line (exit 2, no
traceback), the least it accepts trains and predicts, and labels keep their JSON type through
training, the manifest and `parainfer run`'s output (a column mixing 1 and "1" is refused)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from parainfer.errors import UsageError
from parainfer.models.registry import build_predictor
from parainfer.training import train
from parainfer.training.data import read_labelled, split
from tests.conftest import read_jsonl

WORDS = ["good", "bad", "fine", "awful", "great", "poor", "nice", "dull"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "parainfer.cli", *args], capture_output=True, text=True, timeout=300,
                          check=False)


TOO_LITTLE = {
    "2 rows of 2 classes": ([{"text": "good day", "label": "pos"}, {"text": "bad day", "label": "neg"}],
                            ('2 of 2 classes have only 1 row ("neg", "pos"); training needs at least 2 rows of every '
                             "class (one to train on, one to validate)")),
    "3 rows of 3 classes": ([{"text": f"text {w}", "label": w} for w in WORDS[:3]],
                            '3 of 3 classes have only 1 row ("bad", "fine", "good"); training needs at least 2 rows'),
    "5,000 classes of one row": ([{"text": f"t{i}", "label": i} for i in range(5000)],
                                 ("5,000 of 5,000 classes have only 1 row (0, 1, 2 and 4,997 more); training needs "
                                  "at least 2 rows of every class")),
    "one class": ([{"text": f"text {w}", "label": "pos"} for w in WORDS],
                  'training needs at least 2 classes; found 1, "pos", in all 8 rows'),
    "empty file": ([], "has no rows; training needs at least 2 classes with 2 rows each"),
    "1 and \"1\"": ([{"text": "good day", "label": 1}, {"text": "bad day", "label": "1"}],
                    "label column 'label' mixes types: 1 (integer, line 1) and \"1\" (string, line 2)"),
}


@pytest.mark.parametrize("case", list(TOO_LITTLE))
def test_too_little_data_is_one_line_exit_2(case: str, tmp_path: Path) -> None:
    rows, message = TOO_LITTLE[case]
    src = write_jsonl(tmp_path / "data.jsonl", rows)
    done = cli("train", str(src), "--output", str(tmp_path / "model"))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "model" / "parainfer-model.json").exists()


def test_split_holds_out_one_row_of_every_class() -> None:
    labels = ["a", "a", "b", "b", "c", "c"]
    tr, va = split(labels, 0.2, seed=0)  # 20% of 6 is 2 rows: raised to 3, one per class
    assert sorted(labels[i] for i in va) == ["a", "b", "c"] == sorted(labels[i] for i in tr)
    tr, va = split(labels, 0.9, seed=0)  # capped so training keeps one per class
    assert len(tr) == 3 and len(va) == 3


def test_int_labels_come_back_as_ints_from_run(tmp_path: Path) -> None:
    """The least data (2 classes, 2 rows each) trains; `run --model DIR` writes integer labels."""
    rows = [{"text": f"{w} day", "label": i % 2} for i, w in enumerate(WORDS[:4])]
    src = write_jsonl(tmp_path / "data.jsonl", rows)
    model = tmp_path / "model"
    done = cli("train", str(src), "--output", str(model))
    assert done.returncode == 0, done.stderr
    manifest = json.loads((model / "parainfer-model.json").read_text())
    assert manifest["labels"] == [0, 1] and all(type(x) is int for x in manifest["labels"])
    assert manifest["training"]["min_df"] == 1 and manifest["training"]["n_validation"] == 2
    texts = write_jsonl(tmp_path / "texts.jsonl", [{"id": i, "text": r["text"]} for i, r in enumerate(rows)])
    out = tmp_path / "pred.jsonl"
    done = cli("run", str(texts), "--model", str(model), "--output", str(out), "--workers", "1", "--quiet")
    assert done.returncode == 0, done.stderr
    got = read_jsonl(out)
    assert [r["id"] for r in got] == [0, 1, 2, 3]
    assert all(type(r["label"]) is int and r["label"] in (0, 1) for r in got), got
    import parainfer  # the Python API and the server answer with the same types
    from tests.serving.conftest import running_server

    labels = [r["label"] for r in parainfer.predict([r["text"] for r in rows], model=str(model), workers=1)]
    assert labels == [r["label"] for r in got]
    with running_server(task="classify", model=str(model), workers=1) as url:
        served = httpx.post(f"{url}/v1/classify", json={"input": [r["text"] for r in rows]})
    assert served.status_code == 200, served.text
    assert [d["label"] for d in served.json()["data"]] == labels


def test_string_labels_stay_strings_and_csv_labels_are_strings(tmp_path: Path) -> None:
    rows = [{"text": f"{w} day", "label": str(i % 2)} for i, w in enumerate(WORDS[:6])]
    train(str(write_jsonl(tmp_path / "s.jsonl", rows)), str(tmp_path / "s"), validation=0.5)
    assert json.loads((tmp_path / "s" / "parainfer-model.json").read_text())["labels"] == ["0", "1"]
    csv = tmp_path / "c.csv"
    csv.write_text("text,label\n" + "".join(f"{r['text']},{i % 2}\n" for i, r in enumerate(rows)), encoding="utf-8")
    assert read_labelled(str(csv)).labels == ["0", "1"] * 3
    predictor = build_predictor("classify", str(tmp_path / "s"))
    predictor.load()
    assert {type(p["label"]) for p in predictor.predict(["good day", "bad day"])} == {str}


def test_head_keeps_boolean_labels(tmp_path: Path) -> None:
    rows = [{"text": f"{w} day", "label": i % 2 == 0} for i, w in enumerate(WORDS)]
    out = tmp_path / "head"
    train(str(write_jsonl(tmp_path / "b.jsonl", rows)), str(out), backend="head", workers=1)
    assert json.loads((out / "parainfer-model.json").read_text())["labels"] == [False, True]
    predictor = build_predictor("classify", str(out), dtype="float32")
    assert predictor.labels == [False, True]  # read from head.safetensors, typed
    predictor.load()
    assert {type(p["label"]) for p in predictor.predict(["good day", "awful day"])} == {bool}


def test_mixed_int_and_float_labels_are_refused(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "m.jsonl", [{"text": "a b", "label": 1}, {"text": "c d", "label": 1.5}])
    with pytest.raises(UsageError, match=r"mixes types: 1 \(integer, line 1\) and 1.5 \(float, line 2\)"):
        read_labelled(str(src))
