"""Hypothesis strategies for malformed, oversized and extreme requests, and the fuzz driver
(a model-free helper, imported by path by the hardening tests)."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# Strings a tokenizer or a JSON encoder may choke on: lone surrogates, NUL, control and
# combining characters, right-to-left marks, emoji, a BOM, very long runs.
ODD_TEXTS = st.one_of(
    st.sampled_from(["", " ", "\x00", "\ud800", "a\udfffb", "\ufeff", "\u202e\u0301", "😀" * 50, "\n" * 100,
                     "x" * 5000, "word " * 2000, "[UNK] [CLS] [SEP]", "<|im_start|>", "\\u0000"]),
    st.text(max_size=40),
)
NUMBERS = st.one_of(
    st.sampled_from([0, -1, 1, 2, 2**31, 2**63 - 1, 2**63, 2**64, 2**70, -(2**63) - 1, 10**30,
                     0.0, -0.0, 5e-324, 1e-300, 1e-50, 1e-8, 1e-5, 1.5, 2.0, 2.0000001, 1e308, -1e308]),
    st.integers(), st.floats(allow_nan=False, allow_infinity=False),
)
ANY_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMBERS, ODD_TEXTS),
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
TEXT_INPUTS = st.one_of(ODD_TEXTS, st.lists(ODD_TEXTS, min_size=0, max_size=12),
                        st.builds(lambda n: ["a"] * n, st.sampled_from([8, 9, 64, 65, 3000, 70_000])))
RAW_BODIES = st.one_of(
    st.binary(max_size=200),
    st.sampled_from([b"", b"{", b"null", b"[]", b'"x"', b"{}", b'{"input": NaN}', b'{"input": Infinity}',
                     b"[" * 5000, b'{"input": "a"' + b" " * 1000, b"\xef\xbb\xbf{}", b'{"input": "\xff\xfe"}',
                     b'{"input": 1e999}', b'{"input": "\\ud800"}', b'{"prompt": [1e400]}']),
)
CONTENT_TYPES = st.sampled_from(["application/json"] * 6 + [None, "text/plain", "application/x-www-form-urlencoded",
                                                            "multipart/form-data; boundary=x", "application/json; "
                                                            "charset=latin-1", "application/vnd.api+json", "*/*"])
METHODS = st.sampled_from(["POST"] * 8 + ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])


def embed_bodies() -> st.SearchStrategy[dict[str, Any]]:
    """Embeddings/classify bodies: the right fields with odd values, or odd fields."""
    right = st.fixed_dictionaries({"input": TEXT_INPUTS}, optional={
        "model": ANY_VALUE, "encoding_format": st.sampled_from(["float", "base64", "hex", None, 1]),
        "user": ANY_VALUE, "dimensions": NUMBERS})
    return st.one_of(right, st.dictionaries(st.sampled_from(["input", "model", "encoding_format"]), ANY_VALUE))


def generate_bodies(chat: bool) -> st.SearchStrategy[dict[str, Any]]:
    """Completion or chat bodies. ``max_tokens`` is always set, and its valid values are 1-2
    (the server must answer fast); the rest ranges over valid, invalid and extreme values."""
    sampling = {
        "max_tokens": st.one_of(st.sampled_from([1, 2, 0, -1, 9000, 10**30, "2", 1.5, None]), NUMBERS.filter(
            lambda v: not isinstance(v, (int, float)) or v < 1 or v > 8192)),
        "temperature": NUMBERS, "top_p": NUMBERS, "seed": st.one_of(st.none(), NUMBERS),
        "stop": st.one_of(st.none(), ODD_TEXTS, st.lists(ODD_TEXTS, max_size=20)),
        "stream": st.booleans(), "n": st.sampled_from([1, 1, 1, 2, 0, -1]), "logprobs": st.sampled_from([None, 0, 5]),
        "ignore_eos": st.booleans(), "stream_options": st.sampled_from([None, {"include_usage": True}, "x"]),
    }
    if chat:
        message = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "tool", "x"]),
                                         "content": st.one_of(ODD_TEXTS, st.lists(st.dictionaries(
                                             st.sampled_from(["type", "text"]), ANY_VALUE), max_size=3))})
        first = {"messages": st.one_of(st.lists(message, max_size=4), ANY_VALUE)}
    else:
        first = {"prompt": st.one_of(TEXT_INPUTS, st.lists(st.integers(-5, 60_000), max_size=20),
                                     st.lists(st.lists(st.integers(-1, 49_200), max_size=5), max_size=4), ANY_VALUE)}
    body = st.fixed_dictionaries(first, optional=sampling)
    # a max_tokens that is not valid-and-small would make generation slow when everything else is valid
    return body.map(lambda b: b if _small_or_invalid(b.get("max_tokens")) else {**b, "max_tokens": 1})


def _small_or_invalid(value: Any) -> bool:
    return not isinstance(value, (int, float)) or isinstance(value, bool) or value < 1 or value > 8192 or value <= 2


def requests(paths: list[str], bodies: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """One request: method, path, content type, and a JSON body from ``bodies`` or raw bytes."""
    encoded = bodies.map(lambda b: json.dumps(b).encode("utf-8", "surrogatepass"))
    return st.fixed_dictionaries({
        "method": METHODS, "path": st.sampled_from(paths + ["/v1/nope", "/health", "/v1/models"]),
        "content_type": CONTENT_TYPES, "body": st.one_of(encoded, encoded, encoded, RAW_BODIES),
        "auth": st.sampled_from(["Bearer k"] * 6 + ["bearer k", "Bearer wrong", "", "Basic k"])})


def rss_bytes() -> int:
    """Resident memory of this process (the server runs in it, in a thread)."""
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def fuzz(url: str, strategy: st.SearchStrategy[dict[str, Any]], examples: int) -> dict[int, int]:
    """Send ``examples`` generated requests; fail on any 5xx or an error without the envelope.
    Returns the count of each status seen."""
    seen: dict[int, int] = {}
    client = httpx.Client(base_url=url, timeout=60)

    # derandomize: the same examples on every run, so a CI result can be reproduced and a rare
    # draw (no valid request among them) cannot turn a green suite red between two runs
    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(strategy)
    def one(req: dict[str, Any]) -> None:
        headers = {"authorization": req["auth"]} if req["auth"] else {}
        if req["content_type"]:
            headers["content-type"] = req["content_type"]
        r = client.request(req["method"], req["path"], content=req["body"], headers=headers)
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        assert r.status_code < 500, (r.status_code, r.text[:300], req["path"], req["body"][:300])
        if r.status_code >= 400 and req["method"] != "HEAD":
            assert r.json()["error"]["type"], r.text[:300]
    try:
        one()
    finally:
        client.close()
    return seen
