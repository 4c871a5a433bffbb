"""Backends benchmark on VADER: texts/s and validation accuracy of every classifier backend,
the same classify job on 2 workers, one run.

1. Split VADER 80/20 (stratified, seed 0: the split ``train`` uses, and the one the built-in
   head was trained on), train ``sklearn`` and ``keras`` on the 80% with ``parainfer.training``.
2. Export the built-in encoder + head as ONNX (fp32) and the int8 encoder + head.
3. Run ``parainfer run --model ...`` (Job API, 2 workers, batch 64) on the validation 20% for:
   sklearn, keras, head on torch fp32, head on torch bf16, head on ONNX fp32, head on ONNX int8.
   Texts/s is measured over the parallel phase (model loading excluded) and over the wall time.
4. Print a markdown table (accuracy against the gold labels; label agreement with torch bf16
   and fp32) and draw speed vs accuracy to a PNG.

Usage: python bench/bench_backends.py [--limit N] [--keras-epochs 3] [--keras-train-limit N] [--sklearn-train-limit N]
       [--plot docs/backends_speed_accuracy.png]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def prepare(tmp: Path, limit: int | None) -> tuple[Path, Path]:
    """Write the training and validation splits of VADER as JSONL; returns their paths."""
    from parainfer.platform import datasets
    from parainfer.training.data import split

    rows = [json.loads(line) for line in datasets.fetch("vader").read_text(encoding="utf-8").splitlines()]
    tr, va = split([r["label"] for r in rows], 0.2, seed=0)
    va = va[:limit] if limit else va
    paths = []
    for name, idx in (("train", tr), ("validation", va)):
        p = tmp / f"vader_{name}.jsonl"
        p.write_text("".join(json.dumps(rows[i]) + "\n" for i in idx), encoding="utf-8")
        paths.append(p)
    return paths[0], paths[1]


def subset(path: Path, limit: int | None) -> Path:
    """The first ``limit`` rows of every (len / limit)-th row of a JSONL file (all rows when None)."""
    if not limit:
        return path
    lines = path.read_text(encoding="utf-8").splitlines(True)
    out = path.with_name(f"{path.stem}_{limit}.jsonl")
    out.write_text("".join(lines[::max(1, len(lines) // limit)][:limit]), encoding="utf-8")
    return out


def run(src: Path, out: Path, model: str | None, dtype: str = "auto") -> tuple[list[dict], dict]:
    from parainfer.config import JobConfig
    from parainfer.batch.job import Job

    report = Job(JobConfig(input=str(src), output=str(out), model=model, workers=2, dtype=dtype, batch_size=64,
                           quiet=True, overwrite=True)).run()
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()], report


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=None, help="validation texts to classify (default: all 4,664)")
    ap.add_argument("--keras-epochs", type=int, default=3)
    ap.add_argument("--keras-train-limit", type=int, default=None, help="train keras on N training texts taken evenly")
    ap.add_argument("--sklearn-train-limit", type=int, default=None, help="train sklearn on N training texts taken evenly")
    ap.add_argument("--plot", default="docs/backends_speed_accuracy.png")
    args = ap.parse_args()
    from parainfer.models.onnx_export import export_onnx
    from parainfer.training import train

    tmp = Path(tempfile.mkdtemp(prefix="bench_backends_"))
    train_path, val_path = prepare(tmp, args.limit)
    t = time.perf_counter()
    train(str(subset(train_path, args.sklearn_train_limit)), str(tmp / "sklearn"), backend="sklearn",
               validation=0.01, seed=0)
    print(f"sklearn trained in {time.perf_counter() - t:.0f} s", flush=True)
    t = time.perf_counter()
    ke = train(str(subset(train_path, args.keras_train_limit)), str(tmp / "keras"), backend="keras", validation=0.1, seed=0, epochs=args.keras_epochs)
    print(f"keras trained in {time.perf_counter() - t:.0f} s; epochs {ke['history']}", flush=True)
    export_onnx(tmp / "onnx_fp32", head="builtin", encoder="fp32")
    export_onnx(tmp / "onnx_int8", head="builtin", encoder="int8")
    cases = [("sklearn (TF-IDF + LR)", str(tmp / "sklearn"), "auto"),
             ("keras (LSTM, torch backend)", str(tmp / "keras"), "auto"),
             ("head, torch fp32", None, "float32"), ("head, torch bf16", None, "bfloat16"),
             ("head, ONNX Runtime fp32", str(tmp / "onnx_fp32"), "auto"),
             ("head, ONNX Runtime int8", str(tmp / "onnx_int8"), "auto")]
    results = {}
    for name, model, dtype in cases:
        rows, rep = run(val_path, tmp / f"out_{len(results)}.jsonl", model, dtype)
        results[name] = {"labels": [r["label"] for r in rows], "gold": [r["input_label"] for r in rows],
                         "parallel": rep["parallel_throughput_records_per_s"], "wall": rep["throughput_records_per_s"],
                         "startup": rep["t_startup_s"]}
        acc = sum(a == b for a, b in zip(results[name]["labels"], results[name]["gold"])) / len(rows)
        results[name]["accuracy"] = acc
        print(f"{name}: {results[name]['parallel']:.1f} texts/s (parallel phase), accuracy {acc:.4f}", flush=True)
    table(results, len(rows))
    plot(results, args.plot)
    print(f"load average {os.getloadavg()}; models in {tmp}")


def agree(a: list[str], b: list[str]) -> float:
    return sum(x == y for x, y in zip(a, b)) / len(a)


def table(results: dict, n: int) -> None:
    bf16, fp32 = results["head, torch bf16"], results["head, torch fp32"]
    print(f"\n{n:,} VADER validation texts, 2 workers, batch 64\n")
    print("| backend | texts/s (parallel phase) | texts/s (wall, with model loading) | x torch bf16 | "
          "validation accuracy | labels = torch bf16 | labels = torch fp32 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['parallel']:,.1f} | {r['wall']:,.1f} | {r['parallel'] / bf16['parallel']:.2f} | "
              f"{r['accuracy']:.4f} | {agree(r['labels'], bf16['labels']):.4f} | {agree(r['labels'], fp32['labels']):.4f} |")


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=90)
    for name, r in results.items():
        ax.scatter(r["parallel"], r["accuracy"], s=30)
        ax.annotate(name, (r["parallel"], r["accuracy"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("texts/s on 2 workers (log scale)")
    ax.set_ylabel("VADER validation accuracy")
    ax.set_title("Classifier backends: speed vs accuracy")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot written to {path}")


if __name__ == "__main__":
    main()
