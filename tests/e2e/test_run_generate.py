"""`parainfer run --task generate` on SmolLM2-135M-Instruct: N workers equal 1 worker, and a
prompt that cannot fit the context window fails alone."""

from __future__ import annotations

import json
from pathlib import Path

from parainfer.config import JobConfig
from parainfer.batch.job import Job
from tests.conftest import read_jsonl

PROMPTS = ["Name a fruit.", "Say hello in French.", "What is 2 + 2?", "Write a haiku about rain.",
           "Give me a color.", "Count to three."]


def run(src: Path, out: Path, workers: int, prefix_cache: bool = True) -> tuple[list[dict], dict]:
    cfg = JobConfig(input=str(src), output=str(out), task="generate", workers=workers, batch_size=3, quiet=True,
                    generation={"max_tokens": 8, "prefix_cache": prefix_cache})
    report = Job(cfg).run()
    return read_jsonl(out), report


def test_generate_two_workers_equal_one_and_long_prompt_is_quarantined(tmp_path: Path) -> None:
    src = tmp_path / "prompts.jsonl"
    rows = [{"id": i, "text": p} for i, p in enumerate(PROMPTS)]
    rows.insert(3, {"id": "long", "text": "word " * 9000})  # > 8,192-token context
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    one, rep1 = run(src, tmp_path / "one.jsonl", 1)
    two, rep2 = run(src, tmp_path / "two.jsonl", 2, prefix_cache=False)  # same outputs without the prefix cache
    assert [r["id"] for r in one] == list(range(6)) and one == two
    for row in one:
        assert row["generated_text"].strip() and 1 <= row["completion_tokens"] <= 8
        assert row["finish_reason"] in ("stop", "length") and row["prompt_tokens"] > 5
    assert rep1["failed_records"] == rep2["failed_records"] == 1
    # the chat template's system prompt (24 tokens) is one cached 16-token block for all but the first prompts
    prefill = rep1["prefill"]
    assert prefill["cached_tokens"] >= 16 * 4 and 0 < prefill["prefix_cache_hit_rate"] < 1
    assert prefill["computed_tokens"] + prefill["cached_tokens"] == sum(r["prompt_tokens"] for r in one)
    assert rep2["prefill"]["cached_tokens"] == 0
    assert rep2["prefill"]["computed_tokens"] == prefill["computed_tokens"] + prefill["cached_tokens"]
    (err,) = read_jsonl(tmp_path / "two.errors.jsonl")
    assert err["id"] == "long" and "context window" in err["reason"] and "max_tokens (8)" in err["reason"]


def test_a_chat_messages_column_runs_the_conversation_and_a_bad_one_fails_alone(tmp_path: Path) -> None:
    """OpenAI-style `messages` in the prompt column: one user message equals the same text as a
    plain prompt; a system message changes the prompt; a malformed conversation is quarantined."""
    src = tmp_path / "chats.jsonl"
    rows = [
        {"id": "plain", "messages": "Name a fruit."},
        {"id": "as-chat", "messages": [{"role": "user", "content": "Name a fruit."}]},
        {"id": "system", "messages": [{"role": "system", "content": "Answer in French."},
                                      {"role": "user", "content": "Name a fruit."}]},
        {"id": "bad", "messages": [{"role": "robot", "content": "beep"}]},
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = JobConfig(input=str(src), output=str(tmp_path / "out.jsonl"), task="generate", workers=1, quiet=True,
                    text_column="messages", generation={"max_tokens": 8})
    report = Job(cfg).run()
    out = {r["id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    assert list(out) == ["plain", "as-chat", "system"] and report["failed_records"] == 1
    assert out["as-chat"]["generated_text"] == out["plain"]["generated_text"]
    assert out["as-chat"]["prompt_tokens"] == out["plain"]["prompt_tokens"]
    # SmolLM2's template puts in its own default system prompt when none is given: ours replaces it
    assert out["system"]["prompt_tokens"] != out["plain"]["prompt_tokens"]
    assert out["as-chat"]["messages"] == rows[1]["messages"]  # the input column is kept as given
    (err,) = read_jsonl(tmp_path / "out.errors.jsonl")
    assert err["id"] == "bad" and "role 'robot'" in err["reason"] and "system, user, assistant" in err["reason"]
