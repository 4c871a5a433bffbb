"""`parainfer run --task generate --json-schema FILE --logprobs K` from the command line on
SmolLM2-135M-Instruct: every output validates against the schema and carries its logprobs
columns; a schema xgrammar cannot compile exits 2 naming the problem, before any model loads."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import jsonschema

from tests.conftest import read_jsonl

CLI = [sys.executable, "-m", "parainfer.cli", "run"]
SCHEMA = {"type": "object", "properties": {
    "answer": {"type": "string", "maxLength": 40},
    "confidence": {"enum": ["low", "medium", "high"]},
    "keywords": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 3}},
    "required": ["answer", "confidence", "keywords"]}
PROMPTS = ["What is the capital of France?", "Name a fruit.", "Is the sea salty?", "What colour is the sky?"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args, "--task", "generate", "-q"], capture_output=True, text=True, timeout=600)


def test_json_schema_outputs_validate_and_carry_logprobs(tmp_path: Path) -> None:
    src, schema = tmp_path / "prompts.jsonl", tmp_path / "schema.json"
    src.write_text("".join(json.dumps({"id": i, "text": p}) + "\n" for i, p in enumerate(PROMPTS)))
    schema.write_text(json.dumps(SCHEMA))
    out = tmp_path / "out.jsonl"
    proc = run_cli(str(src), "-o", str(out), "--workers", "1", "--json-schema", str(schema), "--logprobs", "2",
                   "--max-tokens", "96")
    assert proc.returncode == 0, proc.stderr
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == list(range(len(PROMPTS)))
    for row in rows:
        assert row["finish_reason"] == "stop", row["generated_text"]
        jsonschema.validate(json.loads(row["generated_text"]), SCHEMA)
        lps = row["logprobs"]
        assert len(lps) == row["completion_tokens"] and all(len(e["top_logprobs"]) == 2 for e in lps)
        assert math.isclose(row["cumulative_logprob"], sum(e["logprob"] for e in lps), rel_tol=1e-6)
        assert "".join(e["token"] for e in lps).startswith(row["generated_text"])


def test_a_schema_that_cannot_compile_exits_2_naming_it(tmp_path: Path) -> None:
    src, schema = tmp_path / "prompts.jsonl", tmp_path / "schema.json"
    src.write_text(json.dumps({"id": 0, "text": "hi"}) + "\n")
    schema.write_text(json.dumps({"type": "object", "properties": {"a": {"type": "string", "pattern": "(("}}}))
    proc = run_cli(str(src), "-o", str(tmp_path / "out.jsonl"), "--json-schema", str(schema))
    assert proc.returncode == 2 and "the JSON schema cannot be compiled" in proc.stderr, proc.stderr
    assert "parenthesis is not closed" in proc.stderr
    schema.write_text("{not json")
    proc = run_cli(str(src), "-o", str(tmp_path / "out.jsonl"), "--json-schema", str(schema))
    assert proc.returncode == 2 and "is not valid JSON" in proc.stderr, proc.stderr
