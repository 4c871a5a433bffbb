"""The cost of deterministic mode (``--deterministic``, docs/serving.md), in one run.

    python bench/bench_deterministic.py --texts $(parainfer datasets fetch mixed) --limit 2000

Three parts, each side by side (alternating order), on the same texts:

1. step: the padded widths of deterministic mode (the default schedule, multiples of 8 up to 64,
   16 up to 128, 32 beyond; and uniform steps of 8, 16, 32) against free length groups, in-process: the default embedder (float32, 1 thread) encodes the texts
   in arrival-order batches of 32, as the server's batcher would see them; texts/s and the
   padded tokens computed.
2. batch job and server: ``parainfer run --task embed`` (whole command, 2 workers) and
   ``parainfer serve`` under 64 closed-loop clients (bench_serving's client, one text a
   request), each with --deterministic and --no-deterministic.
3. generation: the built-in SmolLM2-135M engine, 64 prompts, greedy, ``--gen-tokens`` tokens,
   room for 32 sequences, with ``deterministic`` on and off: tokens/s.

Prints one line per measurement and the ratios (deterministic / not).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_serving import Point, load_texts, parainfer_cmd, run_point, server, warm_up  # noqa: E402

SRC = str(Path(__file__).resolve().parents[1] / "src")


def step_costs(texts: list[str], repeats: int) -> None:
    """Part 1: encode ``texts`` in batches of 32 with each width step and with free groups."""
    import torch

    from parainfer.models import hf_common
    from parainfer.models.hf_embed import HFEmbedPredictor, default_embed_model_dir

    torch.set_num_threads(1)
    predictor = HFEmbedPredictor(default_embed_model_dir(), dtype="float32")
    predictor.load()
    batches = [texts[i:i + 32] for i in range(0, len(texts), 32)]
    variants = {"free": (None, None), "steps 8/16/32": ("canonical-width", None), "step 8": ("canonical-width", 8),
                "step 16": ("canonical-width", 16), "step 32": ("canonical-width", 32)}
    times: dict[str, list[float]] = {v: [] for v in variants}
    padded: dict[str, int] = {}
    for r in range(repeats):
        for name, (mode, step) in (list(variants.items()) if r % 2 == 0 else list(variants.items())[::-1]):
            predictor.numerics_mode, hf_common.CANONICAL_WIDTH_STEP = mode, step
            t = time.perf_counter()
            total = 0
            for batch in batches:
                predictor.encode(batch)
                total += predictor.token_counts(batch).padded
            times[name].append(time.perf_counter() - t)
            padded[name] = total
    free = statistics.median(times["free"])
    for name in variants:
        wall = statistics.median(times[name])
        print(f"step | {name} | {len(texts) / wall:.1f} texts/s | padded tokens {padded[name]:,} "
              f"| x free {free / wall:.2f}", flush=True)


def job_costs(texts_path: Path, repeats: int, workers: int) -> None:
    """Part 2a: ``parainfer run --task embed`` whole command, deterministic or not."""
    env = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1"}
    tmp = Path(tempfile.mkdtemp(prefix="bench_deterministic_"))
    walls: dict[str, list[float]] = {"--deterministic": [], "--no-deterministic": []}
    for r in range(repeats):
        for flag in (list(walls) if r % 2 == 0 else list(walls)[::-1]):
            out = tmp / f"out{flag}.jsonl"
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "parainfer.cli", "run", str(texts_path), "--output", str(out),
                            "--task", "embed", "--workers", str(workers), "--dtype", "float32", "--quiet",
                            "--overwrite", flag], env=env, check=True, stdout=subprocess.DEVNULL)
            walls[flag].append(time.perf_counter() - t)
    n = sum(1 for _ in texts_path.open())
    rate = {flag: n / statistics.median(w) for flag, w in walls.items()}
    for flag, value in rate.items():
        print(f"run | {flag} | {value:.1f} texts/s whole command (median of {repeats})", flush=True)
    print(f"run | ratio deterministic / not | {rate['--deterministic'] / rate['--no-deterministic']:.3f}")


def serve_costs(texts: list[str], duration: float, workers: int) -> None:
    """Part 2b: ``parainfer serve`` under 64 closed-loop clients, deterministic or not."""
    args = argparse.Namespace(task="embed", workers=workers, device="cpu", dtype="float32", max_wait_ms=5.0, model=None)
    rates = {}
    for flag in ("--deterministic", "--no-deterministic"):
        with server(lambda port, f=flag: parainfer_cmd(args, [f], port)) as url:
            asyncio.run(warm_up(url, texts))
            point = Point(flag, "closed c=64")
            asyncio.run(run_point(url, texts, point, duration, clients=64))
            rates[flag] = point.rate
            print(f"serve {point.row()}", flush=True)
    print(f"serve | ratio deterministic / not | {rates['--deterministic'] / rates['--no-deterministic']:.3f}")


def generation_costs(texts: list[str], tokens: int, repeats: int) -> None:
    """Part 3: engine tokens/s, deterministic or not, 64 prompts, room for 32 sequences."""
    import torch

    from parainfer.generation import LLMEngine, SamplingParams
    from parainfer.generation.model_store import ensure_smollm2

    torch.set_num_threads(1)
    path = ensure_smollm2()
    prompts = texts[:64]
    rates: dict[bool, list[float]] = {True: [], False: []}
    for r in range(repeats):
        for det in ((True, False) if r % 2 == 0 else (False, True)):
            engine = LLMEngine(path, max_num_seqs=32, num_blocks=512, deterministic=det)
            t = time.perf_counter()
            out = engine.generate(prompts, SamplingParams(max_tokens=tokens, temperature=0.0))
            rates[det].append(sum(len(o.token_ids) for o in out) / (time.perf_counter() - t))
    for det, values in rates.items():
        print(f"generate | deterministic {det} | {statistics.median(values):.1f} tokens/s", flush=True)
    print(f"generate | ratio deterministic / not | {statistics.median(rates[True]) / statistics.median(rates[False]):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", required=True, help="JSONL with a 'text' field (e.g. `parainfer datasets fetch mixed`)")
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of each serve point")
    ap.add_argument("--gen-tokens", type=int, default=16)
    ap.add_argument("--step-texts", type=int, default=400, help="texts of the step part")
    ap.add_argument("--parts", default="step,run,serve,generate")
    args = ap.parse_args()
    texts = load_texts(args.texts, args.limit)
    data = Path(tempfile.mkdtemp(prefix="bench_deterministic_in_")) / "in.jsonl"
    data.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    parts = args.parts.split(",")
    print(f"load average at start: {os.getloadavg()}", flush=True)
    if "step" in parts:
        step_costs(texts[:args.step_texts], args.repeats)
    if "run" in parts:
        job_costs(data, args.repeats, args.workers)
    if "serve" in parts:
        serve_costs(texts, args.duration, args.workers)
    if "generate" in parts:
        generation_costs(texts, args.gen_tokens, args.repeats)
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
