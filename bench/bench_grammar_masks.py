"""Per-token cost of JSON-schema token masks: xgrammar vs llguidance (vs outlines-core if installed).

For each schema, a valid JSON instance is tokenized with the engine's tokenizer (SmolLM2) and
the grammar is walked along it: at every token the mask is filled and the token accepted.
Reported: compile time per schema and mean mask+accept time per token (one CPU thread), the
number the engine pays per constrained sequence per decode step.

    python bench/bench_grammar_masks.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import time

SCHEMAS = [
    ({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
      "required": ["name", "age"]}, {"name": "Ada Lovelace", "age": 36}),
    ({"type": "object", "properties": {"sentiment": {"enum": ["positive", "negative", "neutral"]},
                                       "score": {"type": "number"}}, "required": ["sentiment", "score"]},
     {"sentiment": "positive", "score": 0.93}),
    ({"type": "object", "properties": {
        "title": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
        "author": {"type": "object", "properties": {"first": {"type": "string"}, "last": {"type": "string"}},
                   "required": ["first", "last"]}}, "required": ["title", "tags", "author"]},
     {"title": "A short history of the sea and its many moods", "tags": ["sea", "history", "moods"],
      "author": {"first": "Rachel", "last": "Carson"}}),
]


def xgrammar_tokenizer(tok, vocab, eos):
    import xgrammar as xgr

    return xgr.TokenizerInfo.from_huggingface(tok, vocab_size=vocab, stop_token_ids=eos)


def bench_xgrammar(info, vocab, schema, ids):
    import torch
    import xgrammar as xgr

    t0 = time.perf_counter()
    compiled = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False).compile_json_schema(
        json.dumps(schema), any_whitespace=False, separators=(",", ":"))
    compile_s = time.perf_counter() - t0
    matcher = xgr.GrammarMatcher(compiled)
    mask = xgr.allocate_token_bitmask(1, vocab)
    logits = torch.zeros(1, vocab)
    t0 = time.perf_counter()
    for t in ids:
        matcher.fill_next_token_bitmask(mask, 0)
        xgr.apply_token_bitmask_inplace(logits, mask)
        assert matcher.accept_token(t), t
    return compile_s, (time.perf_counter() - t0) / len(ids)


def llguidance_tokenizer(tok, vocab, eos):
    import llguidance.hf

    return llguidance.hf.from_tokenizer(tok, n_vocab=vocab, eos_token=eos)


def bench_llguidance(lltok, vocab, schema, ids):
    import llguidance
    import llguidance.torch
    import torch

    t0 = time.perf_counter()
    grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema),
                                                            defaults={"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"})
    matcher = llguidance.LLMatcher(lltok, grammar)
    compile_s = time.perf_counter() - t0
    mask = llguidance.torch.allocate_token_bitmask(1, vocab)
    logits = torch.zeros(1, vocab)
    t0 = time.perf_counter()
    for t in ids:
        llguidance.torch.fill_next_token_bitmask(matcher, mask, 0)
        llguidance.torch.apply_token_bitmask_inplace(logits, mask)
        assert matcher.consume_token(t), (t, matcher.get_error())
    return compile_s, (time.perf_counter() - t0) / len(ids)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import torch
    from transformers import AutoTokenizer

    from parainfer.generation import ensure_smollm2

    torch.set_num_threads(1)
    path = ensure_smollm2()
    tok = AutoTokenizer.from_pretrained(path)
    vocab = json.loads((path / "config.json").read_text())["vocab_size"]
    eos = [tok.eos_token_id]
    print(f"load average {os.getloadavg()}; vocab {vocab}")
    print("| library | schema | tokenizer setup ms | schema compile ms | mask+accept us/token |")
    print("| --- | ---: | ---: | ---: | ---: |")
    libs = (("xgrammar", xgrammar_tokenizer, bench_xgrammar), ("llguidance", llguidance_tokenizer, bench_llguidance))
    for name, setup, fn in libs:
        t0 = time.perf_counter()
        lib_tok = setup(tok, vocab, eos)
        setup_ms = (time.perf_counter() - t0) * 1e3
        for k, (schema, instance) in enumerate(SCHEMAS):
            ids = tok.encode(json.dumps(instance, separators=(",", ":")), add_special_tokens=False) + eos
            runs = [fn(lib_tok, vocab, schema, ids) for _ in range(args.repeat)]
            c = min(r[0] for r in runs)
            p = min(r[1] for r in runs)
            print(f"| {name} | {k} ({len(ids)} tokens) | {setup_ms:.0f} | {c * 1e3:.1f} | {p * 1e6:.0f} |")


if __name__ == "__main__":
    main()
