"""Whole-command wall time: `parainfer run --task embed` vs sentence-transformers, in one run.

    python bench/bench_embed_command.py --texts 3000 --repeats 2 --before-src /tmp/before/src

On the first N VADER texts, alternates per repeat: sentence-transformers ``encode`` in a fresh
process (``python -c``: import, load the default embed model, read the JSONL, encode with its
defaults, batch 32, save the vectors), `parainfer run --task embed --workers W` with this tree
(``after``) and, with ``--before-src DIR``, with another checkout's ``src`` (``before``), the
two in alternating order. Same model, same dtype (``--dtype``, float32 by default:
sentence-transformers' own; bfloat16 casts the sentence-transformers model too). Each command
is timed from its start to its exit.
Prints every run, then medians: texts/s over the whole command and, for parainfer, over its
parallel phase (report ``parallel_throughput_records_per_s``) and its ``t_startup_s``, with
the ratios to sentence-transformers. Checks that before and after wrote the same bytes and
that parainfer's vectors match sentence-transformers' (largest absolute difference).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SRC = str(Path(__file__).resolve().parents[1] / "src")

ST_SCRIPT = """
import json, sys
import numpy as np
from sentence_transformers import SentenceTransformer
from parainfer.models.hf_embed import default_embed_model_dir
texts = [json.loads(line)["text"] for line in open(sys.argv[1], encoding="utf-8")]
model = SentenceTransformer(str(default_embed_model_dir()), device="cpu")
if sys.argv[3] == "bfloat16":
    import torch
    model = model.to(torch.bfloat16)
np.save(sys.argv[2], model.encode(texts, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32))
"""


def timed(cmd: list[str], env: dict[str, str]) -> float:
    """Seconds from the command's start to its exit (raises if it fails)."""
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--before-src", default=None, help="src/ of the checkout to compare against")
    args = ap.parse_args()
    base = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1"}
    src = Path(subprocess.run([sys.executable, "-m", "parainfer.cli", "datasets", "fetch", "vader"], env=base,
                              capture_output=True, text=True, check=True).stdout.strip())
    tmp = Path(tempfile.mkdtemp(prefix="bench_embed_command_"))
    data = tmp / "in.jsonl"
    with src.open() as f:
        data.write_text("".join(line for _, line in zip(range(args.texts), f)))
    variants = {"after": base}
    if args.before_src:
        variants["before"] = {**base, "PYTHONPATH": args.before_src}
    print(f"load average at start: {os.getloadavg()}")
    walls: dict[str, list[float]] = {"sentence-transformers": [], **{v: [] for v in variants}}
    reports: dict[str, list[dict]] = {v: [] for v in variants}
    for i in range(args.repeats):
        walls["sentence-transformers"].append(
            timed([sys.executable, "-c", ST_SCRIPT, str(data), str(tmp / "st.npy"), args.dtype], base))
        print(f"run {i + 1} sentence-transformers: {walls['sentence-transformers'][-1]:.2f} s", flush=True)
        for v, env in (list(variants.items()) if i % 2 == 0 else list(variants.items())[::-1]):
            out, rep = tmp / f"out_{v}.jsonl", tmp / f"r_{v}.json"
            for p in (out, rep, Path(str(out) + ".parainfer-checkpoint.json")):
                p.unlink(missing_ok=True)
            walls[v].append(timed([sys.executable, "-m", "parainfer.cli", "run", str(data), "--output", str(out),
                                   "--task", "embed", "--workers", str(args.workers), "--dtype", args.dtype,
                                   "--report", str(rep), "--quiet"], env))
            reports[v].append(json.loads(rep.read_text()))
            print(f"run {i + 1} parainfer {v}: {walls[v][-1]:.2f} s (startup {reports[v][-1]['t_startup_s']:.2f} s)",
                  flush=True)
    print(f"load average at end: {os.getloadavg()}")
    st = statistics.median(walls["sentence-transformers"])
    print(f"sentence-transformers: median {st:.2f} s, {args.texts / st:.1f} texts/s")
    for v in variants:
        wall = statistics.median(walls[v])
        par = statistics.median(r["parallel_throughput_records_per_s"] for r in reports[v])
        startup = statistics.median(r["t_startup_s"] for r in reports[v])
        print(f"parainfer {v}: median {wall:.2f} s, {args.texts / wall:.1f} texts/s whole command "
              f"({st / wall:.2f}x sentence-transformers), parallel phase {par:.1f} texts/s "
              f"({par / (args.texts / st):.2f}x), startup {startup:.2f} s")
    if "before" in variants:
        print("before/after outputs identical:",
              (tmp / "out_before.jsonl").read_bytes() == (tmp / "out_after.jsonl").read_bytes())
    ours = np.array([json.loads(line)["embedding"] for line in (tmp / "out_after.jsonl").open()], dtype=np.float32)
    print(f"largest |parainfer - sentence-transformers| component: {np.abs(ours - np.load(tmp / 'st.npy')).max():.2e}")


if __name__ == "__main__":
    main()
