"""`parainfer train --backend sklearn` before/after: fit time, held-out accuracy and peak RSS on
WordNet glosses (45 classes) and VADER (2 classes), against a hand-written scikit-learn baseline
on the same split, one run.

Cases, each in its own process (peak RSS of that process and its children):
- before: the backend's first default, multinomial LogisticRegression(C=4, max_iter=1000) on the
  same TF-IDF word 1-2 + char_wb 2-5 features, one process: ``--before-src DIR``, the ``src``
  folder of a checkout of that code (as it was, with its slow save: the pruned vocabulary's
  numpy indices saved one by one); without it, this tree's ``--solver lbfgs``.
- after: the current default (``--solver svc``: LinearSVC(C=0.5) + sigmoid calibration on 3
  folds), every core.
- baseline: ``TfidfVectorizer(sublinear_tf=True)`` + ``LinearSVC()``, written by hand.

Every case fits on the same rows and is scored on the same held-out rows: ``training.data.split``
(20%, seed 0) of the same file, which ``train`` also uses. ``seconds`` is the wall time of the
whole ``train`` call (read, vectorize, fit, save, predict the held-out rows) and, for the
baseline, of vectorize + fit + predict.

Usage: python bench/bench_train.py [--wordnet 16000] [--before-limit 9600] [--skip-before] [--before-src DIR]
       [--datasets wordnet,vader]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def subset(name: str, n: int | None, tmp: Path) -> Path:
    """The first dataset rows taken evenly (row i * len / n), as JSONL; all rows when n is None."""
    from parainfer.platform import datasets

    rows = [json.loads(line) for line in datasets.fetch(name).read_text(encoding="utf-8").splitlines()]
    if n and n < len(rows):
        rows = [rows[i * len(rows) // n] for i in range(n)]
    out = tmp / f"{name}_{len(rows)}.jsonl"
    out.write_text("".join(json.dumps({"id": r["id"], "text": r["text"], "label": r["label"]}) + "\n"
                           for r in rows), encoding="utf-8")
    return out


def case(kind: str, path: str, out: str) -> dict:
    """Run one case in this process; returns seconds, accuracy, n_train, n_validation."""
    if kind == "baseline":
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.svm import LinearSVC

        from parainfer.training.data import split

        rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]
        tr, va = split([r["label"] for r in rows], 0.2, seed=0)
        t = time.perf_counter()
        vec = TfidfVectorizer(sublinear_tf=True)
        x = vec.fit_transform([rows[i]["text"] for i in tr])
        clf = LinearSVC().fit(x, [rows[i]["label"] for i in tr])
        pred = clf.predict(vec.transform([rows[i]["text"] for i in va]))
        acc = sum(p == rows[i]["label"] for p, i in zip(pred, va)) / len(va)
        return {"seconds": time.perf_counter() - t, "accuracy": acc, "n_train": len(tr), "n_validation": len(va)}
    from parainfer.training import sklearn_tfidf, train

    old = kind == "before" and "solver" not in inspect.signature(sklearn_tfidf.fit).parameters
    options = {"solver": "lbfgs", "n_jobs": 1} if kind == "before" and not old else {}
    r = train(path, out, backend="sklearn", validation=0.2, seed=0, overwrite=True, **options)
    return {"seconds": r["seconds"], "accuracy": r["accuracy"], "n_train": r["n_train"],
            "n_validation": r["n_validation"]}


def run_case(kind: str, path: Path, tmp: Path, before_src: str | None = None) -> dict:
    """``case`` in a child process; adds peak RSS (MiB) of it and its children."""
    env = {**os.environ, "PYTHONPATH": before_src} if kind == "before" and before_src else None
    done = subprocess.run([sys.executable, __file__, "--case", kind, "--data", str(path),
                           "--out", str(tmp / f"model_{kind}_{path.stem}")], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} on {path.name} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--wordnet", type=int, default=16000, help="WordNet glosses taken evenly (45 classes)")
    ap.add_argument("--before-limit", type=int, default=9600,
                    help="also run every case on this many WordNet glosses, and 'before' only there (0: before on "
                         "--wordnet too)")
    ap.add_argument("--skip-before", action="store_true")
    ap.add_argument("--datasets", default="wordnet,vader", help="which of wordnet,vader to run")
    ap.add_argument("--before-src", help="the src folder of a checkout of the code before (default: this tree, "
                    "--solver lbfgs)")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        result = case(args.case, args.data, args.out)
        rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        print(json.dumps({**result, "peak_rss_mib": rss / 1024}))
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    files = []
    if "wordnet" in args.datasets:
        files.append(("WordNet glosses, 45 classes", subset("wordnet", args.wordnet, tmp)))
        if args.before_limit:
            files.append(("WordNet glosses, 45 classes", subset("wordnet", args.before_limit, tmp)))
    if "vader" in args.datasets:
        files.append(("VADER, 2 classes", subset("vader", None, tmp)))
    rows = []
    for title, path in files:
        kinds = ["after", "baseline"]
        if not args.skip_before and not (args.before_limit and path.stem == f"wordnet_{args.wordnet}"):
            kinds.insert(0, "before")
        for kind in kinds:
            r = run_case(kind, path, tmp, args.before_src)
            rows.append((title, kind, r))
            print(f"{title} ({r['n_train']:,} train / {r['n_validation']:,} held out) {kind}: {r['seconds']:.1f} s, "
                  f"accuracy {r['accuracy']:.4f}, peak RSS {r['peak_rss_mib']:,.0f} MiB", flush=True)
    print("\n| data | rows (train / held out) | case | seconds | accuracy | peak RSS MiB |")
    print("|---|---|---|---:|---:|---:|")
    for title, kind, r in rows:
        print(f"| {title} | {r['n_train']:,} / {r['n_validation']:,} | {kind} | {r['seconds']:.1f} | "
              f"{r['accuracy']:.4f} | {r['peak_rss_mib']:,.0f} |")
    print(f"\nload average {os.getloadavg()}; {os.cpu_count()} CPUs; files in {tmp}")


if __name__ == "__main__":
    main()
