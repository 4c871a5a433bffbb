"""Benchmark: the cost of structured output (JSON-schema token masks) per generated token.

The same N chat prompts run twice in one engine: with ``response_format`` a JSON schema
(enum, string, array; xgrammar masks computed per sequence in every batched step) and free,
with each free request's ``max_tokens`` set to the length its constrained run produced and EOS
ignored, so both runs decode the same number of tokens in the same batch shapes. Greedy.
Reported: useful tokens/s of each run (best of --repeat; the schema is compiled before
timing), the per-token overhead (1 - constrained / free) and the share of constrained outputs
that parse and validate (``jsonschema``).

    python bench/bench_structured_output.py --num-prompts 32 --max-num-seqs 32 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jsonschema  # noqa: E402

from bench_generation import SENTENCES  # noqa: E402
from parainfer.generation import LLMEngine, SamplingParams, ensure_smollm2  # noqa: E402
from parainfer.generation import sampling  # noqa: E402

GRAMMAR_S = [0.0]  # seconds spent filling/applying masks and advancing grammar states


def _timed(fn):
    def wrapper(*a, **k):
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            GRAMMAR_S[0] += time.perf_counter() - t0
    return wrapper


sampling.mask_rows = _timed(sampling.mask_rows)

SCHEMA = {"type": "object", "properties": {
    "sentiment": {"enum": ["positive", "negative", "neutral"]},
    "summary": {"type": "string", "maxLength": 80},
    "keywords": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 3}},
    "required": ["sentiment", "summary", "keywords"]}
FORMAT = {"type": "json_schema", "json_schema": {"name": "review", "schema": SCHEMA}}


def timed(engine: LLMEngine, prompts: list, params: list) -> tuple[list, float]:
    t0 = time.perf_counter()
    results = engine.generate(prompts, params)
    return results, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-prompts", type=int, default=32)
    ap.add_argument("--max-num-seqs", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()}")
    engine = LLMEngine(ensure_smollm2(), max_num_seqs=args.max_num_seqs, threads=args.threads)
    prompts = [engine.format_chat([{"role": "user", "content": "Describe the sentiment of this review as JSON: "
                                    + SENTENCES[i % len(SENTENCES)]}]) for i in range(args.num_prompts)]
    t0 = time.perf_counter()
    engine.grammars.compile(FORMAT)
    print(f"schema compile (tokenizer info included): {time.perf_counter() - t0:.2f} s")
    constrained = [SamplingParams(max_tokens=args.max_tokens, response_format=FORMAT)] * len(prompts)
    best = {"json_schema": 0.0, "free": 0.0}
    free: list = []
    valid = total = 0
    grammar_tokens = 0
    for _ in range(args.repeat):
        results, wall = timed(engine, prompts, constrained)
        tokens = sum(r.completion_tokens for r in results)
        grammar_tokens += tokens
        best["json_schema"] = max(best["json_schema"], tokens / wall)
        for r in results:
            total += 1
            try:
                jsonschema.validate(json.loads(r.text), SCHEMA)
                valid += r.finish_reason == "stop"
            except (ValueError, jsonschema.ValidationError):
                pass
        free = free or [SamplingParams(max_tokens=r.completion_tokens, ignore_eos=True) for r in results]
        free_results, wall = timed(engine, prompts, free)
        assert sum(r.completion_tokens for r in free_results) == tokens
        best["free"] = max(best["free"], tokens / wall)
        print(f"  run: {tokens} tokens; json_schema {best['json_schema']:.1f} tok/s, free {best['free']:.1f} tok/s")
    ratio = best["json_schema"] / best["free"]
    print(f"load average after: {os.getloadavg()}")
    print("| run | tokens/s | vs free |")
    print("| --- | ---: | ---: |")
    print(f"| free (same lengths, EOS ignored) | {best['free']:.1f} | 1.00 |")
    print(f"| json_schema (xgrammar masks) | {best['json_schema']:.1f} | {ratio:.2f} |")
    print(f"overhead per token: {100 * (1 - ratio):.1f}%; valid outputs: {valid}/{total}; mask time "
          f"{1e3 * GRAMMAR_S[0] / grammar_tokens:.3f} ms per constrained token")


if __name__ == "__main__":
    main()
