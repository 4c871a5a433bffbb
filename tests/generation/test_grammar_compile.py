"""Compiling response formats off the engine's critical path (``grammar.GrammarCompiler``) on
SmolLM2-135M's tokenizer: random small schemas either compile into a grammar with no dead end or
are a UsageError (hypothesis), the compiled-grammar cache stays within its bytes, and the engine
keeps stepping other sequences while one schema compiles, which then fails alone at its budget.
"""

from __future__ import annotations

import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from parainfer.errors import UsageError
from parainfer.generation import SamplingParams
from parainfer.generation.grammar import GrammarCompiler, GrammarSettings, GrammarState, GrammarTimeout, SchemaLimits

NAMES = st.sampled_from(["a", "b", "id", "x/y", "n~m"])
REFS = st.sampled_from(["#", "#/$defs/a", "#/$defs/b", "#/properties/a", "#/items", "#/anyOf/0", "#/nope",
                        "https://example.com/s.json", "#anchor", 7])
LEAF = st.one_of(
    st.booleans(),
    st.fixed_dictionaries({"type": st.sampled_from(["string", "integer", "number", "boolean", "null", "object",
                                                    "array", "colour"])},
                          optional={"minimum": st.integers(-3, 3), "maximum": st.integers(-3, 3),
                                    "minLength": st.integers(-1, 3), "maxLength": st.integers(-1, 3),
                                    "pattern": st.sampled_from(["^a+$", "[", "[0-9]{2}"]),
                                    "enum": st.lists(st.one_of(st.integers(-2, 2), st.text("ab", max_size=2)),
                                                     max_size=3),
                                    "const": st.integers(0, 2), "format": st.sampled_from(["email", "date", "?"])}),
    st.builds(lambda ref: {"$ref": ref}, REFS),
)


def _extend(children: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(
        st.builds(lambda props, req, extra: {"type": "object", "properties": props, "required": req,
                                             **({} if extra is None else {"additionalProperties": extra})},
                  st.dictionaries(NAMES, children, max_size=3), st.lists(NAMES, max_size=3),
                  st.one_of(st.none(), children)),
        st.builds(lambda items, least, most: {"type": "array", "items": items, "minItems": least,
                                              **({} if most is None else {"maxItems": most})},
                  children, st.integers(-1, 2), st.one_of(st.none(), st.integers(-1, 2))),
        st.builds(lambda key, branches: {key: branches}, st.sampled_from(["anyOf", "oneOf", "allOf"]),
                  st.lists(children, max_size=3)),
        st.builds(lambda defs, ref: {"$defs": defs, "$ref": ref}, st.dictionaries(st.sampled_from(["a", "b"]),
                                                                                  children, max_size=2), REFS),
    )


SCHEMAS = st.recursive(LEAF, _extend, max_leaves=10)


def rf(schema: object) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}


@pytest.fixture(scope="module")
def compiler(hf):
    _, tok = hf
    return GrammarCompiler(tok, 49152, {tok.eos_token_id}, GrammarSettings(compile_timeout_s=60))


def walk(compiler: GrammarCompiler, compiled, steps: int) -> None:
    """Follow the grammar ``steps`` tokens (the lowest allowed id each time): every state must
    allow some token until the grammar terminates (no dead end a sequence could fall into)."""
    import xgrammar as xgr

    state = GrammarState(compiled, compiler.vocab_size)
    bitmask = xgr.allocate_token_bitmask(1, compiler.vocab_size)
    for _ in range(steps):
        if state.is_terminated:
            return
        state.matcher.fill_next_token_bitmask(bitmask, 0)
        logits = torch.zeros(1, compiler.vocab_size)
        xgr.apply_token_bitmask_inplace(logits, bitmask)
        allowed = torch.nonzero(logits[0] == 0).flatten()
        assert len(allowed), "the grammar allows no token before it is complete"
        state.accept(int(allowed[0]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(SCHEMAS)
def test_a_random_schema_compiles_into_a_live_grammar_or_is_a_usage_error(compiler, schema):
    try:
        compiled = compiler.compile(rf(schema))
    except UsageError as exc:
        assert str(exc) and getattr(exc, "status", 400) in (400, 408, 413)
        return
    walk(compiler, compiled, 24)


def test_the_compiled_grammar_cache_stays_within_its_bytes(hf):
    _, tok = hf
    schema = [{"type": "object", "properties": {f"{name}{i}": {"enum": [f"v{j}" for j in range(30)]}
                                                for i in range(4)}} for name in "abcdefghij"]
    probe = GrammarCompiler(tok, 49152, {tok.eos_token_id})
    size = probe.compile(rf(schema[0])).memory_size_bytes
    grammars = GrammarCompiler(tok, 49152, {tok.eos_token_id}, GrammarSettings(cache_bytes=3 * size + 1000))
    for s in schema:
        grammars.compile(rf(s))
        assert grammars.stats["cache_bytes"] <= 3 * size + 1000
    stats = grammars.stats
    assert stats["misses"] == 10 and stats["compiles"] == 10 and stats["evictions"] >= 6
    assert 2 <= stats["cache_entries"] <= 3
    grammars.compile(rf(schema[-1]))  # recent: still cached
    assert grammars.stats["hits"] == 1
    grammars.compile(rf(schema[0]))  # evicted long ago: compiled again
    assert grammars.stats["compiles"] == 11
    assert sum(grammars.stats["compile_seconds_buckets"]) == 11 and grammars.stats["compile_seconds_sum"] > 0


def test_the_engine_steps_others_while_a_schema_compiles_and_it_times_out_alone(make_engine):
    roomy = SchemaLimits(max_properties=5_000)
    engine = make_engine(grammar=GrammarSettings(compile_timeout_s=0.5, limits=roomy))
    engine.grammars.compile({"type": "json_object"})  # xgrammar's view of the vocabulary, built once
    slow = rf({"type": "object", "properties": {f"field_{i}": {"type": "integer"} for i in range(900)}})
    got: dict[str, list] = {"plain": [], "slow": []}
    compiling_when_plain_ran = []

    def on_plain(out):
        compiling_when_plain_ran.append(engine.grammars.stats["compiling"])
        got["plain"].append(out)

    engine.add_request("A JSON record:", SamplingParams(max_tokens=2, response_format=slow),
                       on_output=got["slow"].append)
    engine.add_request("The capital of France is", SamplingParams(max_tokens=4), on_output=on_plain)
    t0 = time.monotonic()
    while engine.has_unfinished():
        engine.step()
    assert got["plain"][-1].finished and got["plain"][-1].completion_tokens == 4
    assert compiling_when_plain_ran[0] == 1  # the engine stepped while the schema was compiling
    [error] = got["slow"]
    assert isinstance(error, GrammarTimeout) and error.status == 408 and "0.5 s budget" in str(error)
    assert time.monotonic() - t0 < 30 and engine.grammars.stats["timeouts"] == 1
    deadline = time.monotonic() + 300
    while engine.grammars.stats["compiling"] and time.monotonic() < deadline:  # it goes on compiling
        time.sleep(0.1)
    [again] = engine.generate(["A JSON record:"], SamplingParams(max_tokens=2, response_format=slow))
    assert again.completion_tokens == 2 and engine.grammars.stats["hits"] >= 1  # the retry found it compiled
