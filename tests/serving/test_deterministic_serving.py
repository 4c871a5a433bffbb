"""Deterministic serving: a text sent to ``parainfer serve`` gets exactly the bits the batch job
(``parainfer run``, same model and dtype) writes for it, whatever requests it was batched with.

200 real texts of mixed length (VADER tweets and reviews, BBC paragraphs and whole articles past
the 256-token window) go through ``parainfer run --task embed`` to JSONL, then to a real server
in random groups (seeded) from 16 threads at once with the official ``openai`` client; every
vector must equal the job's, float32 for float32. The JSON float path is checked: the floats
the server writes decode back to the very float32 values.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from conftest import running_server
from parainfer.platform import datasets


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    vader = [json.loads(line)["text"] for line in datasets.fetch("vader").open()]
    bbc = [json.loads(line)["text"] for line in datasets.fetch("bbc").open()]
    rng = random.Random(3)
    paragraphs = [p for article in bbc[:60] for p in article.split("\n") if len(p) > 80]
    texts = rng.sample(vader, 130) + rng.sample(paragraphs, 60) + bbc[100:110]  # the last 10 pass the window
    rng.shuffle(texts)
    return texts


def run_job(tmp_path: Path, texts: list[str], task: str) -> tuple[list[dict], dict]:
    """``parainfer run`` on ``texts`` (2 workers, float32); returns (output rows, report)."""
    source, out, report = tmp_path / f"{task}.in.jsonl", tmp_path / f"{task}.out.jsonl", tmp_path / f"{task}.report.json"
    source.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "parainfer.cli", "run", str(source), "--output", str(out),
                           "--task", task, "--dtype", "float32", "--workers", "2", "--quiet",
                           "--report", str(report)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return rows, json.loads(report.read_text())


def send_in_random_groups(texts: list[str], call, seed: int = 0) -> dict[int, object]:
    """Send ``texts`` in random groups of 1..12 (seeded), 16 requests at a time; {index: output}."""
    rng = random.Random(seed)
    order = list(range(len(texts)))
    rng.shuffle(order)
    groups, k = [], 0
    while k < len(order):
        n = rng.randint(1, 12)
        groups.append(order[k:k + n])
        k += n
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda g: call([texts[i] for i in g]), groups))
    return {i: out for g, outs in zip(groups, answers) for i, out in zip(g, outs)}


def test_served_embeddings_equal_the_batch_jobs_bit_for_bit(tmp_path, corpus):
    rows, report = run_job(tmp_path, corpus, "embed")
    assert report["batch_invariance"]["deterministic"] is True
    expected = {row["id"]: np.asarray(row["embedding"], dtype=np.float32) for row in rows}
    with running_server(task="embed", workers=2, dtype="float32") as url:
        health = httpx.get(f"{url}/health").json()
        assert health["deterministic"] is True, health
        assert health["batch_invariance"]["mode"] == report["batch_invariance"]["mode"]
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)

        def embed(group: list[str]) -> list[list[float]]:
            response = client.embeddings.create(input=group, model="all-MiniLM-L6-v2", encoding_format="float")
            return [d.embedding for d in response.data]

        served = send_in_random_groups(corpus, embed)
    assert len(served) == len(corpus) == len(expected)
    differ = [i for i, vector in served.items()
              if np.asarray(vector, dtype=np.float32).tobytes() != expected[i].tobytes()]
    assert not differ, f"{len(differ)} of {len(corpus)} texts got other bits from serve than from run: {differ[:10]}"
    # The JSON floats are float32 values written as the shortest text that reads back as the same
    # float32 (as numpy prints it): each decodes to the very float32 and str(float32) gives it again.
    some = np.asarray(served[0], dtype=np.float64)
    assert all(float(str(np.float32(x))) == x for x in some)
