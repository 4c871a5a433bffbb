"""Benchmark: automatic prefix caching on vs off on a chat workload (time to first token, tokens/s).

Workload: N chat prompts (the bench_generation instruction texts, each as one user message;
SmolLM2's chat template puts its default system prompt in front of every one, so all prompts
share their first 24 tokens, and prompts of the same instruction template a few more), greedy,
EOS ignored, each with its own output length drawn uniformly from [--min-tokens, --max-tokens]
(seed 0), so requests finish and arrive at different steps. ``--streams`` client threads each send their next request
when the previous one finished (a closed loop, like ``--streams`` chat users) to one engine
stepped by an ``EngineLoop`` thread, as the server runs it. Time to first token (TTFT) = submit
-> first generated token; tokens/s = all completion tokens / wall time. Both configurations run
in this process on the same weights, one after the other; each engine first serves one warm-up
request (a different prompt), so with caching on the system prompt is cached when the timed
run starts, as on a server that has been up for a while.

    python bench/bench_prefix_cache.py --num-prompts 64 --streams 16 --min-tokens 16 --max-tokens 64
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from bench_generation import build_texts, cpu_name  # noqa: E402
from parainfer.generation import EngineLoop, LLMEngine, SamplingParams, ensure_smollm2  # noqa: E402


def run_point(engine: LLMEngine, prompts: list[list[int]], streams: int, lengths: list[int]) -> dict:
    """Closed loop: ``streams`` threads take the next prompt as soon as their last one finished."""
    with EngineLoop(engine) as loop:
        warm = SamplingParams(max_tokens=4, ignore_eos=True)
        list(loop.submit(engine.format_chat([{"role": "user", "content": "Warm up."}]), warm))
        before = dict(engine.stats)
        ttft: list[float] = []
        tokens = [0]
        lock = threading.Lock()
        todo = iter(range(len(prompts)))

        def client() -> None:
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                first = None
                n = 0
                for out in loop.submit(prompts[i], SamplingParams(max_tokens=lengths[i], ignore_eos=True)):
                    if first is None and out.new_token_ids:
                        first = time.perf_counter() - t0
                    n += len(out.new_token_ids)
                with lock:
                    ttft.append(first)
                    tokens[0] += n

        threads = [threading.Thread(target=client) for _ in range(streams)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    stats = {k: engine.stats[k] - before[k] for k in ("prefill_tokens", "prefix_cache_hit_tokens", "steps")}
    return {"ttft": sorted(ttft), "tokens": tokens[0], "wall_s": wall, **stats}


def pct(xs: list[float], q: float) -> float:
    return 1000 * xs[min(len(xs) - 1, int(q * len(xs)))]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--num-prompts", type=int, default=64)
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--min-tokens", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--max-num-seqs", type=int, default=32)
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--order", default="off,on", help="configurations in run order, comma separated")
    args = ap.parse_args(argv)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = ensure_smollm2()
    tok = AutoTokenizer.from_pretrained(model_dir)
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    rng = random.Random(0)
    lengths = [rng.randint(args.min_tokens, args.max_tokens) for _ in range(args.num_prompts)]
    load = [os.getloadavg()[0]]
    rows = {}
    for name in args.order.split(","):
        engine = LLMEngine.from_hf(hf, tok, dtype=args.dtype, max_num_seqs=args.max_num_seqs, num_blocks=1024,
                                   block_size=args.block_size, enable_prefix_caching=name == "on")
        prompts = [engine.format_chat([{"role": "user", "content": t}]) for t in build_texts(args.num_prompts, None)]
        rows[name] = run_point(engine, prompts, args.streams, lengths)
        del engine
    load.append(os.getloadavg()[0])
    mean_prompt = sum(map(len, prompts)) / len(prompts)
    print(f"\nSmolLM2-135M-Instruct, dtype {args.dtype}, threads {torch.get_num_threads()}, CPU {cpu_name()} x "
          f"{os.cpu_count()}, load average {load[0]:.1f} -> {load[1]:.1f}")
    print(f"{args.num_prompts} chat prompts (mean {mean_prompt:.0f} tokens, default system prompt), {args.streams} "
          f"streams, {args.min_tokens}..{args.max_tokens} tokens each (mean {sum(lengths) / len(lengths):.0f}), "
          f"block size {args.block_size}\n")
    print("| prefix cache | TTFT p50 ms | TTFT p99 ms | tokens/s | prefill computed | prefill cached | steps |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in rows.items():
        print(f"| {name} | {pct(r['ttft'], .5):.0f} | {pct(r['ttft'], .99):.0f} | {r['tokens'] / r['wall_s']:.1f} | "
              f"{r['prefill_tokens']} | {r['prefix_cache_hit_tokens']} | {r['steps']} |")
    if "on" in rows and "off" in rows:
        on, off = rows["on"], rows["off"]
        print(f"\nTTFT p50 off/on: {pct(off['ttft'], .5) / pct(on['ttft'], .5):.2f}x; tokens/s on/off: "
              f"{(on['tokens'] / on['wall_s']) / (off['tokens'] / off['wall_s']):.2f}x")
    print("\ncommand: python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
