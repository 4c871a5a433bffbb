"""Whole-command embed of N VADER texts on each numeric path and on ``--backend auto``'s pick,
against sentence-transformers' ``encode`` (and its ``backend="onnx"`` where it can run offline),
in one run.

    python bench/bench_embed_backends.py --texts 3000 --repeats 2

First ``parainfer backends --task embed`` measures the paths and caches the pick (its time is
printed: the one-off ONNX export and quantisation, then the timed calibration); then, per
repeat and in alternating order, each command runs in a fresh process, timed from its start to
its exit: sentence-transformers (import, load all-MiniLM-L6-v2, read the JSONL, ``encode`` with
its defaults, save), and ``parainfer run --task embed --workers W`` with ``--backend torch
--dtype float32``, ``torch --dtype bfloat16`` (only on a CPU with native bf16), ``onnx``,
``onnx-int8``, ``openvino`` (only when installed) and ``auto`` (reading the cached pick).
Prints every run, then medians: texts/s over the whole command, the ratio to
sentence-transformers, and each path's largest cosine distance to sentence-transformers' vectors.
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
kwargs = {"backend": "onnx"} if sys.argv[3] == "onnx" else {}
model = SentenceTransformer(str(default_embed_model_dir()), device="cpu", **kwargs)
np.save(sys.argv[2], model.encode(texts, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32))
"""


def timed(cmd: list[str], env: dict[str, str]) -> float | None:
    """Seconds from the command's start to its exit; None when it fails (its stderr's last line printed)."""
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        print(f"  failed: {(done.stderr.strip().splitlines() or ['?'])[-1][:200]}")
        return None
    return time.perf_counter() - t


def flags() -> str:
    with open("/proc/cpuinfo") as f:
        line = next(x for x in f if x.startswith("flags"))
    return " ".join(sorted(x for x in line.split() if x.startswith(("avx2", "avx512", "amx", "avx_vnni"))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1"}
    cli = [sys.executable, "-m", "parainfer.cli"]
    src = Path(subprocess.run([*cli, "datasets", "fetch", "vader"], env=env, capture_output=True, text=True,
                              check=True).stdout.strip())
    tmp = Path(tempfile.mkdtemp(prefix="bench_embed_backends_"))
    data = tmp / "in.jsonl"
    with src.open() as f:
        data.write_text("".join(line for _, line in zip(range(args.texts), f)))
    print(f"CPU flags: {flags()}; load average at start: {os.getloadavg()}")
    t = time.perf_counter()
    measured = subprocess.run([*cli, "backends", "--task", "embed"], env=env, capture_output=True, text=True)
    print(measured.stdout + measured.stderr[-500:] + f"(parainfer backends: {time.perf_counter() - t:.1f} s)")

    sys.path.insert(0, SRC)
    from parainfer.models.accelerated import openvino_available
    from parainfer.models.dtype import cpu_has_bf16

    paths = {"torch-float32": ["--backend", "torch", "--dtype", "float32"], "onnx-float32": ["--backend", "onnx"],
             "onnx-int8": ["--backend", "onnx-int8"], "auto": ["--backend", "auto"]}
    if cpu_has_bf16():
        paths["torch-bfloat16"] = ["--backend", "torch", "--dtype", "bfloat16"]
    if openvino_available():
        paths["openvino-float32"] = ["--backend", "openvino"]
    commands = {"st-encode": [sys.executable, "-c", ST_SCRIPT, str(data), str(tmp / "st-encode.npy"), "torch"],
                "st-onnx": [sys.executable, "-c", ST_SCRIPT, str(data), str(tmp / "st-onnx.npy"), "onnx"]}
    for name, extra in paths.items():
        commands[name] = [*cli, "run", str(data), "--output", str(tmp / f"{name}.jsonl"), "--task", "embed",
                          "--workers", str(args.workers), "--overwrite", "--quiet",
                          "--report", str(tmp / f"{name}.report.json"), *extra]
    walls: dict[str, list[float]] = {name: [] for name in commands}
    for i in range(args.repeats):
        for name in (list(commands) if i % 2 == 0 else list(commands)[::-1]):
            if i and not walls[name]:
                continue  # failed before (sentence-transformers' onnx backend needs optimum)
            wall = timed(commands[name], env)
            if wall is not None:
                walls[name].append(wall)
                print(f"run {i + 1} {name}: {wall:.2f} s", flush=True)
    print(f"load average at end: {os.getloadavg()}")
    if not walls["st-encode"]:
        raise SystemExit("sentence-transformers encode failed")
    st = statistics.median(walls["st-encode"])
    ref = np.load(tmp / "st-encode.npy")
    auto = json.loads((tmp / "auto.report.json").read_text()).get("backend", {})
    print("\n| command | median s | texts/s | vs st encode | min cosine to st |\n|---|---|---|---|---|")
    for name, values in walls.items():
        if not values:
            print(f"| {name} | failed | | | |")
            continue
        wall = statistics.median(values)
        if name.startswith("st-"):
            vectors = np.load(tmp / f"{name}.npy")
        else:
            vectors = np.array([json.loads(x)["embedding"] for x in (tmp / f"{name}.jsonl").open()], dtype=np.float32)
        cos = float(np.min(np.sum(vectors * ref, axis=1)))
        label = f"auto (picked {auto.get('path')}, {auto.get('decision')})" if name == "auto" else name
        print(f"| {label} | {wall:.2f} | {args.texts / wall:.1f} | {st / wall:.2f}x | {cos:.6f} |")


if __name__ == "__main__":
    main()
