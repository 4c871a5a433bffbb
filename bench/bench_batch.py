"""Batch-job benchmark on VADER: naive loop vs sentence-transformers vs `parainfer run`.

All in one run, on this machine:

1. naive: one text at a time through the same encoder + head, one process (fp32);
2. sentence-transformers ``encode`` in one process, its defaults (batch 32, fp32), + the head;
3. ``parainfer run --task classify`` with 1 and 2 workers, at float32 and auto dtype.

Prints a markdown table of texts/s, the ratio to sentence-transformers, and the share of labels
that agree with the float32 sentence-transformers reference.

Usage: python bench/bench_batch.py [--limit N] [--naive-limit 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def load_texts(limit: int | None) -> tuple[Path, list[str]]:
    from parainfer.platform import datasets

    path = datasets.fetch("vader")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    if limit:
        rows = rows[:limit]
        path = Path(tempfile.mkdtemp()) / "vader_subset.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path, [r["text"] for r in rows]


def head_labels(vectors: np.ndarray) -> list[str]:
    from parainfer.models.hf_classify import DEFAULT_HEAD, apply_head, load_head

    weight, bias, labels, _ = load_head(DEFAULT_HEAD)
    return [r["label"] for r in apply_head(vectors.astype(np.float32), weight, bias, labels)]


def bench_naive(texts: list[str]) -> float:
    import torch

    from parainfer.models.hf_embed import HFEncoder, default_embed_model_dir

    torch.set_num_threads(os.cpu_count() or 1)
    enc = HFEncoder(default_embed_model_dir(), dtype="float32")
    enc.load()
    t = time.perf_counter()
    for text in texts:
        enc.encode([text])
    return len(texts) / (time.perf_counter() - t)


def bench_sentence_transformers(texts: list[str]) -> tuple[float, list[str]]:
    from sentence_transformers import SentenceTransformer

    from parainfer.models.hf_embed import default_embed_model_dir

    model = SentenceTransformer(str(default_embed_model_dir()), device="cpu")
    t = time.perf_counter()
    vectors = model.encode(texts, normalize_embeddings=True)
    return len(texts) / (time.perf_counter() - t), head_labels(vectors)


def bench_parainfer(path: Path, workers: int, dtype: str) -> tuple[float, float, list[str], dict]:
    """Returns (texts/s over the whole command, texts/s in the parallel phase, labels, report)."""
    with tempfile.TemporaryDirectory() as tmp:
        out, rep = Path(tmp) / "out.jsonl", Path(tmp) / "r.json"
        cmd = [sys.executable, "-m", "parainfer.cli", "run", str(path), "--output", str(out), "--workers",
               str(workers), "--dtype", dtype, "--report", str(rep), "--quiet"]
        t = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - t
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        report = json.loads(rep.read_text())
    return len(rows) / wall, report["parallel_throughput_records_per_s"], [r["label"] for r in rows], report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="use the first N VADER texts (default all)")
    parser.add_argument("--naive-limit", type=int, default=2000, help="texts for the slow naive loop")
    args = parser.parse_args()
    path, texts = load_texts(args.limit)
    print(f"{len(texts)} VADER texts; {platform.processor() or platform.machine()}, {os.cpu_count()} cores",
          file=sys.stderr)
    naive = bench_naive(texts[: args.naive_limit])
    st_rate, st_labels = bench_sentence_transformers(texts)
    rows = [("naive loop, 1 process, fp32", naive, None, None, None),
            ("sentence-transformers encode, fp32", st_rate, None, 1.0, None)]
    for workers in (1, 2):
        for dtype in ("float32", "auto"):
            rate, parallel, labels, report = bench_parainfer(path, workers, dtype)
            agree = float(np.mean([a == b for a, b in zip(labels, st_labels)]))
            name = f"parainfer run, {workers} worker{'s' if workers > 1 else ''}, {dtype} ({report['model']['dtype']})"
            rows.append((name, rate, parallel, agree, report["padding_efficiency"]))
    print("| configuration | texts/s (whole command) | texts/s (parallel phase) | x sentence-transformers "
          "| labels agreeing with fp32 reference | padding efficiency |")
    print("|---|---|---|---|---|---|")
    for name, rate, parallel, agree, pad in rows:
        print(f"| {name} | {rate:.1f} | {'' if parallel is None else f'{parallel:.1f}'} | {rate / st_rate:.2f} "
              f"| {'' if agree is None else f'{agree:.2%}'} | {'' if pad is None else f'{pad:.2f}'} |")


if __name__ == "__main__":
    main()
