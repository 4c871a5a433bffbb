"""What batching can buy on this machine: the encoder's cost per text by batch size.

Runs the default embed predictor in this process on one thread (what each of 2 workers gets
on 2 cores) over random VADER texts, batch sizes 1..64, with and without length groups
(``parainfer.batch.tasks.split_by_padding``), and prints ms per text. The ratio of the batch-1 cost
to the best batched cost is the most any dynamic batcher can gain over batching off in
``bench/bench_serving.py`` with this model here, before counting the HTTP server's own work.

    python bench/bench_encoder_batching.py [--seconds 3] [--texts $(parainfer datasets fetch vader)]
"""

from __future__ import annotations

import argparse
import json
import random
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", help="JSONL with a 'text' field (default: VADER from the cache)")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per point")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16")
    parser.add_argument("--sizes", default="1,8,20,32,64")
    args = parser.parse_args()

    import torch

    from parainfer.platform import datasets
    from parainfer.models import hf_common
    from parainfer.models.hf_embed import HFEmbedPredictor, default_embed_model_dir

    torch.set_num_threads(args.threads)
    path = args.texts or datasets.fetch("vader")
    with open(path, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()]
    predictor = HFEmbedPredictor(default_embed_model_dir(), dtype=args.dtype)
    predictor.load()
    default_overhead = hf_common.FORWARD_OVERHEAD_TOKENS["cpu"]
    print(f"model {predictor.describe()['model'].rsplit('/', 2)[-2]} dtype {predictor.dtype}, "
          f"{args.threads} thread(s), {len(texts)} texts\n")
    print("| batch | length groups | ms per text | texts/s | x batch 1 |")
    print("|---|---|---|---|---|")
    rng = random.Random(0)
    base = None
    for size in [int(s) for s in args.sizes.split(",")]:
        for overhead in ((default_overhead, float("inf")) if size > 1 else (default_overhead,)):
            hf_common.FORWARD_OVERHEAD_TOKENS["cpu"] = overhead
            predictor.predict(rng.sample(texts, size))  # warm-up
            done, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < args.seconds:
                predictor.predict(rng.sample(texts, size))
                done += size
            ms = (time.perf_counter() - t0) / done * 1000
            base = base or ms
            print(f"| {size} | {'on' if overhead != float('inf') else 'off'} | {ms:.2f} | {1000 / ms:.0f} | "
                  f"{base / ms:.2f} |", flush=True)
    hf_common.FORWARD_OVERHEAD_TOKENS["cpu"] = default_overhead


if __name__ == "__main__":
    main()
