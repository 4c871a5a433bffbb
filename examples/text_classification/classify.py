"""The worked example: train text classifiers on 10,000 labelled texts, then classify the texts
in 10 subsets on 1 worker and on 4 workers, and print where the time went.

    python examples/text_classification/classify.py [--workdir DIR] [--texts 10000] [--backends sklearn,head,keras]

Steps (see README.md next to this file for a measured run):
1. data: 10,000 texts of the VADER ground truth (``parainfer.datasets``), 5,000 with a positive
   human rating and 5,000 with a negative one (rating 0 is not in the set), drawn with a fixed seed;
2. train: each backend available (``parainfer.training.train``: sklearn TF-IDF + logistic
   regression, the built-in sentence encoder + a logistic-regression head, a Keras
   Embedding -> LSTM -> Dense model), on a seeded 80/20 split, printing validation accuracy;
   where ``parainfer train`` is not installed, the built-in sentiment head is used as is;
3. classify: the 10,000 texts as 10 subsets of 1,000 (one task each) with ``parainfer.Pool`` on
   1 worker and on 4 workers (model load excluded: ``pool.wait_ready()`` loads every replica first);
4. report: T_c, T_s, T_e, T_w, speedup and efficiency of each run (docs/timing.md), the per-worker
   busy times and their MAX (the makespan), and the speedup measured between the two runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import parainfer


def labelled_texts(n: int, seed: int = 0) -> list[dict]:
    """``n`` VADER rows, half positive and half negative, in a seeded random order."""
    rows = [json.loads(line) for line in open(parainfer.datasets.fetch("vader"), encoding="utf-8")]
    rng = random.Random(seed)
    picked = []
    for label in ("positive", "negative"):
        of_label = [r for r in rows if r["label"] == label]
        picked += rng.sample(of_label, n // 2)
    rng.shuffle(picked)
    return [{"id": r["id"], "text": r["text"], "label": r["label"]} for r in picked]


def available_backends(wanted: list[str] | None) -> list[str]:
    """The ``parainfer train`` backends installed here (all of them unless ``wanted``)."""
    try:
        from parainfer.training.train import TRAINERS
    except ImportError:
        return []
    import importlib.util

    names = [b for b in TRAINERS if importlib.util.find_spec(TRAINERS[b]) is not None]
    return [b for b in names if wanted is None or b in wanted]


def train_models(data_file: Path, workdir: Path, backends: list[str], reuse: bool = False) -> dict[str, str | None]:
    """Train each backend (or with ``reuse``, take the model already in ``workdir``); returns
    {backend: model dir} (the built-in head: {"builtin head": None})."""
    if not backends:
        print("parainfer train is not available here: using the built-in sentiment head")
        return {"builtin head": None}
    from parainfer.training.train import train  # (the package attribute `train` is shadowed by this submodule once imported)

    models = {}
    for backend in backends:
        model_dir = workdir / f"model-{backend}"
        if reuse and (model_dir / "parainfer-model.json").is_file():
            metrics = json.loads((model_dir / "parainfer-model.json").read_text())["metrics"]
            print(f"reused {backend:8s} from {model_dir}: validation accuracy {metrics['accuracy']:.4f}")
            models[backend] = str(model_dir)
            continue
        t = time.perf_counter()
        metrics = train(str(data_file), str(workdir / f"model-{backend}"), backend=backend, overwrite=True)
        print(f"trained {backend:8s} in {time.perf_counter() - t:6.1f} s: validation accuracy "
              f"{metrics['accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f} on {metrics['n_validation']} texts")
        models[backend] = metrics["model_dir"]
    return models


def classify(model: str | None, texts: list[str], workers: int, subsets: int) -> tuple[list, dict]:
    """Classify ``texts`` as ``subsets`` equal tasks on ``workers`` workers; (results, report)."""
    size = -(-len(texts) // subsets)
    with parainfer.Pool(model=model, workers=workers, batch_size=size, max_batch_tokens=None,
                        bucket_window=1, threads_per_worker=1) as pool:
        pool.wait_ready()  # every replica loads its model first: the timed call is classification only
        results = pool.predict(texts)
        return results, pool.last_report


def print_report(name: str, report: dict) -> None:
    busy = [w["busy_s"] for w in report["per_worker"]]
    print(f"  {name}: {report['records']:,} texts in {report['tasks']} tasks on {report['workers']} worker(s): "
          f"T_N {report['t_parallel_s']:.2f} s (wall {report['wall_s']:.2f} s)")
    print(f"    T_c {report['t_create_s']:.3f} s  T_s {report['t_schedule_s']:.3f} s  T_e {report['t_execute_s']:.2f} s"
          f"  T_w {report['t_wait_s']:.2f} s  speedup {report['speedup']:.2f}  efficiency {report['efficiency']:.2f}")
    print(f"    per-worker busy s: {', '.join(f'{b:.2f}' for b in busy)}; makespan (MAX) {max(busy):.2f} s, "
          f"tasks per worker {[w['tasks'] for w in report['per_worker']]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "parainfer-text-classification"))
    parser.add_argument("--texts", type=int, default=10_000)
    parser.add_argument("--subsets", type=int, default=10)
    parser.add_argument("--workers", default="1,4", help="worker counts to compare")
    parser.add_argument("--backends", default=None, help="comma-separated (default: every one installed)")
    parser.add_argument("--reuse-models", action="store_true", help="use the models trained in --workdir before")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rows = labelled_texts(args.texts)
    data_file = workdir / "vader-10k.jsonl"
    data_file.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows):,} labelled texts ({sum(r['label'] == 'positive' for r in rows):,} positive) in {data_file}; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    models = train_models(data_file, workdir, available_backends(args.backends and args.backends.split(",")),
                          args.reuse_models)
    texts = [r["text"] for r in rows]
    counts = [int(n) for n in args.workers.split(",")]
    for backend, model in models.items():
        print(f"{backend}: {args.subsets} subsets of {-(-len(texts) // args.subsets):,} texts")
        runs = {}
        for n in counts:
            results, report = classify(model, texts, n, args.subsets)
            runs[n] = (results, report)
            print_report(f"{n} worker(s)", report)
        base_results, base = runs[counts[0]]
        for n in counts[1:]:
            results, report = runs[n]
            same = [r["label"] for r in results] == [r["label"] for r in base_results]
            print(f"  measured speedup {counts[0]} -> {n} workers: T_N {base['t_parallel_s']:.2f} s / "
                  f"{report['t_parallel_s']:.2f} s = {base['t_parallel_s'] / report['t_parallel_s']:.2f}; "
                  f"labels identical: {same}")
    print(f"load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":  # a script with arguments; parainfer itself needs no guard (docs/api.md)
    main()
