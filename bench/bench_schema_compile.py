"""Structured output under pathological JSON schemas: does a compile delay other requests, and is
memory bounded?

Three parts (``--parts``, default all):

* ``isolation`` (in process, this tree): an ``LLMEngine`` runs 2-token greedy completions one
  after another, alone, then while a 20,000-value enum compiles (a) in the ``GrammarCompiler``'s
  thread (xgrammar releases the GIL) at niceness 10 (the default) and 0, and (b) in a spawned
  process that sends the serialized grammar back, deserialized in a thread of the engine's
  process (a process could be killed at its time budget). Reports the median and worst
  completion latency of each, and when the grammar was ready. This is the measurement that
  chose the thread.
* ``latency`` (per ``--src`` tree, a server subprocess, ``--threads-per-worker 1``): the median
  latency of sequential 2-token completions alone, then while pathological schemas are sent at
  once (1,000 optional properties, a 1,000-value enum of 110-character strings, a 20,000-value
  enum (0.6 MB), 500-deep nesting, ``{"$ref": "#"}``, a two-step ``$ref`` loop); their statuses
  and times; the ratio.
* ``memory`` (per tree): the server's RSS after ``--schemas`` distinct schemas (each 20 properties
  with fresh names and a 40-value enum), sent 4 at a time with ``max_tokens`` 1, against
  ``--grammar-cache-mb`` (passed to trees that have the option).

    python bench/bench_schema_compile.py --src src                         # this tree
    python bench/bench_schema_compile.py --src /work/main/src --src src    # before / after
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import statistics
import string
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_serving_attacks as serving_attacks  # noqa: E402

PLAIN = {"prompt": "The capital of France is", "max_tokens": 2, "temperature": 0}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start(src: str, *args: str) -> tuple[subprocess.Popen, str]:
    """A generate server of the tree ``src`` with one thread per worker (``bench_serving_attacks.start``)."""
    return serving_attacks.start(src, "--task", "generate", "--threads-per-worker", "1", *args)


def words(rng: random.Random, n: int, length: int) -> list[str]:
    return ["".join(rng.choice(string.ascii_lowercase) for _ in range(length)) for _ in range(n)]


def rf(schema: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}


def pathological(rng: random.Random) -> dict[str, str]:
    """Name -> the schema as JSON text (the 500-deep one is built as text: too deep for json.dumps)."""
    deep = '{"type":"object","properties":{"a":' * 500 + '{"type":"string"}' + '},"required":["a"]}' * 500
    return {
        "1000 optional properties": json.dumps({"type": "object", "properties": {
            w: {"type": "integer"} for w in words(rng, 1000, 8)}}),
        "enum 1000 x 110 chars": json.dumps({"enum": words(rng, 1000, 110)}),
        "enum 20000 (0.6 MB)": json.dumps({"enum": [f"{i:05d}-{w}" for i, w in enumerate(words(rng, 20000, 23))]}),
        "500-deep nesting": deep,
        '{"$ref": "#"}': json.dumps({"$ref": "#"}),
        "two-step $ref loop": json.dumps({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
                                          "$ref": "#/$defs/a"}),
    }


def chat_body(schema_json: str, max_tokens: int) -> bytes:
    head = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens})[:-1]
    return (head + ',"response_format":{"type":"json_schema","json_schema":{"name":"s","schema":'
            + schema_json + "}}}").encode()


# ---- isolation: thread vs process, in one engine process -------------------------------------------

def _compile_in_child(info_json: str, schema: str, conn: Any) -> None:
    import xgrammar as xgr

    info = xgr.TokenizerInfo.deserialize_json(info_json)
    compiled = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False).compile_json_schema(
        schema, any_whitespace=False, separators=(",", ":"))
    conn.send(compiled.serialize_json())


def isolation() -> None:
    import xgrammar as xgr

    from parainfer.generation import LLMEngine, SamplingParams, ensure_smollm2
    from parainfer.generation.grammar import GrammarCompiler, GrammarSettings, SchemaLimits

    engine = LLMEngine(ensure_smollm2(), threads=1)
    ids = engine.tokenizer.encode(PLAIN["prompt"])
    params = SamplingParams(max_tokens=2)
    vocab, eos = engine.grammars.vocab_size, set(engine.grammars.eos_ids)
    info = xgr.TokenizerInfo.from_huggingface(engine.tokenizer, vocab_size=vocab, stop_token_ids=sorted(eos))
    schema = {"enum": [f"{i:05d}-value" for i in range(20000)]}
    roomy = SchemaLimits(max_bytes=1 << 24, max_nodes=1 << 20, max_enum_values=1 << 20, max_string_chars=1 << 24)

    def plain_latencies(until: threading.Event | None, count: int = 10) -> list[float]:
        out = []
        while (until is None and len(out) < count) or (until is not None and not until.is_set()):
            t0 = time.perf_counter()
            engine.generate([ids], params)
            out.append(time.perf_counter() - t0)
        return out

    def while_running(work: Any) -> tuple[list[float], float, float]:
        done, t0, ready = threading.Event(), time.perf_counter(), {}

        def run() -> None:
            work()
            ready["s"] = time.perf_counter() - t0
            done.set()
        threading.Thread(target=run).start()
        return plain_latencies(done), ready["s"] if ready else float("nan"), os.getloadavg()[0]

    def in_process() -> None:
        parent, child = mp.get_context("spawn").Pipe()
        proc = mp.get_context("spawn").Process(target=_compile_in_child,
                                               args=(info.serialize_json(), json.dumps(schema), child))
        proc.start()
        text = parent.recv()
        proc.join()
        xgr.CompiledGrammar.deserialize_json(text, info)

    plain_latencies(None, 3)
    rows: list[tuple[str, list[float], float | None, float]] = [
        ("alone", plain_latencies(None, 20), None, os.getloadavg()[0])]
    for nice in (10, 0):
        compiler = GrammarCompiler(engine.tokenizer, vocab, eos, GrammarSettings(
            compile_timeout_s=600, compile_niceness=nice, limits=roomy))
        compiler.compile(None)
        rows.append((f"compile in a thread (GrammarCompiler), niceness {nice}",
                     *while_running(lambda c=compiler: c.compile(rf(schema)))))
    rows.append(("compile in a spawned process (serialize, send, deserialize)", *while_running(in_process)))
    rows.append(("alone again", plain_latencies(None, 20), None, os.getloadavg()[0]))
    base = statistics.median(rows[0][1] + rows[-1][1])  # the load moves: both "alone" runs are the baseline
    for name, lat, ready, load in rows:
        print(json.dumps({"part": "isolation", "case": name, "completions": len(lat),
                          "median_ms": round(statistics.median(lat) * 1e3, 1), "max_ms": round(max(lat) * 1e3, 1),
                          "median_ratio": round(statistics.median(lat) / base, 2),
                          "grammar_ready_s": None if ready is None else round(ready, 2),
                          "load_average": load}), flush=True)


# ---- latency and memory: a server per tree -----------------------------------------------------------

async def timed_plain(client: httpx.AsyncClient, count: int) -> list[float]:
    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        r = await client.post("/v1/completions", json=PLAIN)
        r.raise_for_status()
        out.append(time.perf_counter() - t0)
    return out


async def latency_part(url: str, src: str) -> None:
    rng = random.Random(1)
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        await timed_plain(client, 3)
        alone = await timed_plain(client, 10)

        async def bad(name: str, schema_json: str) -> tuple[str, int, float]:
            t0 = time.perf_counter()
            r = await client.post("/v1/chat/completions", content=chat_body(schema_json, 2),
                                  headers={"content-type": "application/json"})
            return name, r.status_code, time.perf_counter() - t0

        jobs = [asyncio.create_task(bad(n, s)) for n, s in pathological(rng).items()]
        await asyncio.sleep(0.5)
        t0 = time.perf_counter()
        during = await timed_plain(client, 10)
        plain_s = time.perf_counter() - t0
        results = await asyncio.gather(*jobs)
    for name, status, secs in results:
        print(json.dumps({"part": "latency", "tree": src, "schema": name, "status": status, "s": round(secs, 2)}),
              flush=True)
    a, d = statistics.median(alone), statistics.median(during)
    slowest = max(s for _, _, s in results)
    print(json.dumps({"part": "latency", "tree": src, "plain_alone_median_ms": round(a * 1e3, 1),
                      "plain_during_median_ms": round(d * 1e3, 1), "plain_during_max_ms": round(max(during) * 1e3, 1),
                      "ratio": round(d / a, 2), "plain_10_done_s": round(plain_s, 2),
                      "slowest_schema_request_s": round(slowest, 2)}), flush=True)


def small_schema(rng: random.Random) -> dict[str, Any]:
    props: dict[str, Any] = {w: {"type": "string", "maxLength": 16} for w in words(rng, 19, 10)}
    props["kind"] = {"enum": words(rng, 40, 12)}
    return {"type": "object", "properties": props, "required": list(props)[:5]}


async def memory_part(url: str, pid: int, src: str, count: int, cache_mb: float | None) -> None:
    rng = random.Random(2)
    sem = asyncio.Semaphore(4)
    statuses: dict[int, int] = {}
    samples = []
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        async def one(schema: dict[str, Any]) -> None:
            async with sem:
                r = await client.post("/v1/chat/completions", json={
                    "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "response_format": rf(schema)})
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        await one(small_schema(rng))  # the vocabulary view and first-use allocations
        before = rss_mib(pid)
        t0 = time.perf_counter()
        for k in range(0, count, 100):
            await asyncio.gather(*(one(small_schema(rng)) for _ in range(min(100, count - k))))
            samples.append(round(rss_mib(pid) - before, 1))
        elapsed = time.perf_counter() - t0
        metrics = (await client.get("/metrics")).text
    cache = [line for line in metrics.splitlines() if line.startswith("parainfer_grammar_cache_")]
    print(json.dumps({"part": "memory", "tree": src, "schemas": count, "statuses": statuses,
                      "rss_before_mib": round(before, 1), "rss_growth_mib_every_100": samples,
                      "cache_limit_mib": cache_mb, "cache_metrics": cache, "s": round(elapsed, 1)}), flush=True)


def has_grammar_options(src: str) -> bool:
    return "grammar_cache_mb" in (Path(src) / "parainfer/serving/config.py").read_text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", action="append", default=None, help="a source tree (its src/ directory)")
    parser.add_argument("--parts", default="isolation,latency,memory")
    parser.add_argument("--schemas", type=int, default=1000)
    parser.add_argument("--grammar-cache-mb", type=float, default=32.0)
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    print(json.dumps({"load_average": os.getloadavg(), "cpus": os.cpu_count()}), flush=True)
    if "isolation" in parts:
        isolation()
    for src in [os.path.abspath(s) for s in (args.src or ["src"])]:
        if "latency" in parts:
            proc, url = start(src)
            try:
                asyncio.run(latency_part(url, src))
            finally:
                proc.terminate()
                proc.wait(60)
        if "memory" in parts:
            extra = ["--grammar-cache-mb", str(args.grammar_cache_mb)] if has_grammar_options(src) else []
            proc, url = start(src, *extra)
            try:
                asyncio.run(memory_part(url, proc.pid, src, args.schemas, args.grammar_cache_mb if extra else None))
            finally:
                proc.terminate()
                proc.wait(60)
    print(json.dumps({"load_average_end": os.getloadavg()}), flush=True)


if __name__ == "__main__":
    main()
