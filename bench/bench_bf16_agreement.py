"""Benchmark: how often the engine's greedy output in bfloat16 equals its float32 output.

Issue 16's bar: greedy outputs in bf16 agree with fp32 on >= 95% of sequences token for token
over 64 tokens (fp32 itself equals HF ``generate`` exactly: tests/generation). Same prompts as
``bench_generation.py`` (its built-in instruction prompts, chat template applied), greedy, EOS
ignored, every sequence exactly ``--max-tokens`` long; both dtypes in one process.

Reported: sequences identical over all tokens, the mean and the shortest common prefix (tokens),
and the wall time and tokens/s of each dtype (model load excluded). ``--hf-prompts N`` also runs
Hugging Face ``generate`` in both dtypes on the first N prompts, one at a time (EOS held off by
``min_new_tokens``), for how much a bf16 model's greedy text drifts from its fp32 text anyway.
Usage::

    python bench/bench_bf16_agreement.py --num-prompts 64 --max-tokens 64 [--hf-prompts 16]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_generation import build_texts, cpu_name  # noqa: E402

from parainfer.generation import LLMEngine, SamplingParams, ensure_smollm2  # noqa: E402


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def hf_outputs(model_dir: Path, prompts: list[list[int]], max_tokens: int) -> dict[str, list[list[int]]]:
    """Greedy token ids of HF ``generate`` per prompt (batch 1, no padding), fp32 and bf16."""
    import torch
    from transformers import AutoModelForCausalLM

    found = {}
    for dtype in ("float32", "bfloat16"):
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
        rows = []
        for ids in prompts:
            with torch.inference_mode():
                out = model.generate(torch.tensor([ids]), max_new_tokens=max_tokens, min_new_tokens=max_tokens,
                                     do_sample=False)
            rows.append(out[0, len(ids):].tolist())
        found["hf_" + dtype] = rows
    return found


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--num-prompts", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--max-num-seqs", type=int, default=32)
    ap.add_argument("--hf-prompts", type=int, default=0, help="also compare HF generate on this many prompts")
    args = ap.parse_args(argv)

    model_dir = ensure_smollm2()
    texts = build_texts(args.num_prompts, None)
    outputs, rows = {}, []
    load0 = os.getloadavg()[0]
    for dtype in ("float32", "bfloat16"):
        engine = LLMEngine(model_dir, dtype=dtype, max_num_seqs=args.max_num_seqs)
        prompts = [engine.format_chat([{"role": "user", "content": t}]) for t in texts]
        engine.generate([prompts[0]], SamplingParams(max_tokens=4))  # warm up kernels
        t0 = time.perf_counter()
        results = engine.generate(prompts, SamplingParams(max_tokens=args.max_tokens, ignore_eos=True))
        wall = time.perf_counter() - t0
        outputs[dtype] = [list(r.token_ids) for r in results]
        rows.append((dtype, wall, args.num_prompts * args.max_tokens / wall))
        del engine
    if args.hf_prompts:
        outputs.update(hf_outputs(model_dir, prompts[: args.hf_prompts], args.max_tokens))
    print(f"model smollm2-135m-instruct, CPU {cpu_name()} x {os.cpu_count()}, "
          f"load average {load0:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"{args.num_prompts} prompts, {args.max_tokens} greedy tokens each (EOS ignored)\n")
    print("| dtype | wall s | tokens/s |\n| --- | ---: | ---: |")
    for dtype, wall, rate in rows:
        print(f"| {dtype} | {wall:.1f} | {rate:.1f} |")
    print()
    pairs = [("engine bf16 vs engine fp32", "bfloat16", "float32")]
    if args.hf_prompts:
        pairs += [("HF bf16 vs HF fp32", "hf_bfloat16", "hf_float32"),
                  ("engine fp32 vs HF fp32", "float32", "hf_float32")]
    for label, a, b in pairs:
        prefixes = [common_prefix(x, y) for x, y in zip(outputs[a], outputs[b])]
        same = sum(p == args.max_tokens for p in prefixes)
        print(f"{label}: identical {same}/{len(prefixes)} sequences ({same / len(prefixes):.1%}); "
              f"common prefix mean {sum(prefixes) / len(prefixes):.1f}, shortest {min(prefixes)} tokens")
    print("command: python bench/bench_bf16_agreement.py " + " ".join(argv or sys.argv[1:]))


if __name__ == "__main__":
    main()
