"""The Ray Data peer of bench_ray.py: the same VADER classify job written the way a Ray user would
today, ``map_batches`` with an actor pool of 2 and ``preserve_order=True``.

Usage (as a driver of a running cluster): python bench/raydata_peer.py ADDRESS INPUT.jsonl OUT.json
Writes {"wall_s", "records", "in_order", "labels"} to OUT.json (wall time includes ray.init).
"""

from __future__ import annotations

import json
import sys
import time


class Classify:
    """One model replica per actor: parainfer's default classifier, called on each batch."""

    def __init__(self) -> None:
        from parainfer.models.registry import build_predictor

        self.predictor = build_predictor("classify")
        self.predictor.load()

    def __call__(self, batch: dict) -> dict:
        out = self.predictor.predict(list(batch["text"]))
        batch["label"] = [o["label"] for o in out]
        batch["score"] = [o["score"] for o in out]
        return batch


def main(address: str, path: str, out: str) -> None:
    t0 = time.perf_counter()
    import ray

    ray.init(address=address, log_to_driver=False)
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    rows = [json.loads(line) for line in open(path, encoding="utf-8")]
    ds = ray.data.from_items([{"id": r["id"], "text": r["text"]} for r in rows])
    result = ds.map_batches(Classify, concurrency=2, batch_size=64, num_cpus=1).take_all()
    wall = time.perf_counter() - t0
    with open(out, "w") as f:
        json.dump({"wall_s": wall, "records": len(result),
                   "in_order": [r["id"] for r in result] == [r["id"] for r in rows],
                   "labels": [r["label"] for r in result]}, f)


if __name__ == "__main__":
    main(*sys.argv[1:4])
