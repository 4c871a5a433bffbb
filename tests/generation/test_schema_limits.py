"""The cheap checks before a JSON schema is compiled (``generation.schema_check`` through
``grammar.schema_of``), and the compiled-grammar cache's LRU by bytes. No model, no xgrammar
compile: these run in milliseconds."""

from __future__ import annotations

import json

import pytest

from parainfer.errors import UsageError
from parainfer.generation.grammar import GrammarCache, SchemaError, SchemaLimits, SchemaTooLarge, schema_of


def rf(schema: object) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}


def nested(levels: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


LINKED_LIST = {"$defs": {"node": {"type": "object", "properties": {
    "value": {"type": "integer"}, "next": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/node"}]}},
    "required": ["value", "next"]}}, "$ref": "#/$defs/node"}


@pytest.mark.parametrize("schema, status, message", [
    (nested(500), 400, "nested more than 64 levels deep"),
    ('{"a":' * 5000 + "1" + "}" * 5000, 400, "nested too deeply to parse"),
    ({"$ref": "#"}, 400, "admits no finite JSON value: # -> # is a cycle"),
    ({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}, 400,
     "#/$defs/a -> #/$defs/b -> #/$defs/a is a cycle with no way out"),
    ({"type": "object", "properties": {"me": {"$ref": "#"}}, "required": ["me"]}, 400,
     "# -> #/properties/me -> # is a cycle"),
    ({"type": "object", "properties": {"x": {"$ref": "#/$defs/a"}},  # optional, but a loop is still refused
      "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}}, 400, "is a cycle with no way out"),
    ({"type": "array", "items": {"$ref": "#"}, "minItems": 1}, 400, "# -> #/items -> #"),
    ({"anyOf": []}, 400, "the subschema at # can never be satisfied"),
    ({"$ref": "https://example.com/schema.json"}, 400, "only local references"),
    ({"$ref": "#/$defs/missing"}, 400, "$ref '#/$defs/missing' at # does not resolve: no '$defs' in #"),
    ({"enum": [f"{i:05d}-abcdefghijklmnopqrstuvw" for i in range(20_000)]}, 413,  # 0.6 MB
     "at most 262,144 are accepted"),
    ({"enum": list(range(1_001))}, 400, "1,001 enum values in all; at most 1,000 are accepted"),
    ({"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(1_500)}}, 400,
     "1,500 properties in all; at most 1,000 are accepted"),
    ({"type": "string", "description": "x" * 300_000}, 413, "at most 262,144 are accepted"),
    ({"enum": ["x" * 200] * 700}, 400, "140,000 characters of property names"),
    ([{"type": "string"}], 400, "a JSON schema object; got list"),
])
def test_a_pathological_schema_is_refused_naming_the_problem(schema, status, message):
    with pytest.raises(SchemaError) as err:
        schema_of(rf(schema))
    assert err.value.status == status and message in str(err.value)
    assert isinstance(err.value, UsageError)  # the CLI and the engine's callers already handle these


def test_bytes_over_the_limit_are_413_and_the_limits_are_configurable():
    schema = {"type": "object", "properties": {"name": {"type": "string", "description": "d" * 2_000}}}
    assert json.loads(schema_of(rf(schema))) == schema
    with pytest.raises(SchemaTooLarge, match="is at least 2,0[0-9][0-9] bytes; at most 1,024 are accepted"):
        schema_of(rf(schema), SchemaLimits(max_bytes=1_024))
    with pytest.raises(SchemaError, match="nested more than 3 levels"):
        schema_of(rf(nested(2)), SchemaLimits(max_depth=3))
    assert schema_of(rf(nested(2)), SchemaLimits(max_depth=5))
    with pytest.raises(SchemaError, match="more than 10 values"):
        schema_of(rf({"enum": list(range(20))}), SchemaLimits(max_nodes=10))
    with pytest.raises(UsageError, match="max_depth must be >= 1, got 0"):
        SchemaLimits(max_depth=0)


def test_recursion_with_a_way_out_and_a_string_schema_pass():
    for schema in (LINKED_LIST, {"type": "object", "properties": {"child": {"$ref": "#"}}},
                   {"type": "array", "items": {"$ref": "#"}}, nested(20),
                   {"type": "object", "properties": {"a/b": {"type": "integer"}, "c": {"$ref": "#/properties/a~1b"}}}):
        assert json.loads(schema_of(rf(schema))) == schema
    text = json.dumps(LINKED_LIST)
    assert json.loads(schema_of(rf(text))) == LINKED_LIST
    assert schema_of({"type": "json_object"}) == '{"type": "object"}' and schema_of({"type": "text"}) is None


def test_the_cache_drops_the_least_recently_used_by_bytes():
    cache = GrammarCache(max_bytes=100)
    cache.put("a", "A", 39)  # 40 bytes with its key
    cache.put("b", "B", 29)  # 30
    assert cache.get("a") == "A"  # a is now the most recently used
    cache.put("c", "C", 39)  # 40: 110 > 100, so b (least recently used) goes
    assert cache.get("b") is None and cache.get("a") == "A" and cache.get("c") == "C"
    assert (cache.bytes, len(cache), cache.evictions) == (80, 2, 1)
    cache.put("big", "G", 200)  # larger than the whole budget: not kept, nothing evicted for it
    assert cache.get("big") is None and (cache.bytes, cache.evictions) == (80, 1)
    cache.put("a", "A2", 9)  # replacing an entry re-counts its bytes
    assert cache.get("a") == "A2" and cache.bytes == 50
    for i in range(10):
        cache.put(f"k{i}", i, 29)
    assert cache.bytes <= 100 and len(cache) == 3 and cache.get("k9") == 9
