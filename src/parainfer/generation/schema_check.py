"""Cheap checks of a JSON schema before xgrammar compiles it: size limits, ``$ref`` resolution,
and schemas that admit no finite JSON value.

A grammar's compile time grows with the schema (super-linearly for optional properties and
long enums: 1,500 optional properties took 15 s on the 2-core machine) and a compile cannot be
interrupted, so :func:`check_schema_limits` refuses what is too large before any compile starts:
bytes (:class:`SchemaTooLarge`, HTTP 413), nesting depth, nodes, enum values, properties and
string characters (:class:`SchemaError`, 400). It also refuses ``$ref`` s that are not local
JSON pointers or do not resolve, and cycles with no way out (``{"$ref": "#"}``, a two-step
``$ref`` loop, a required property that contains itself): xgrammar compiles those to a grammar
that allows no token, or none that ever ends. Every walk is iterative (no recursion), and the
walks stop at the first limit passed, so the cost is bounded by the limits, not by the input.
Limits and why: docs/serving.md, "Structured output: limits".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from parainfer.errors import UsageError

_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_ONE = ("items", "additionalProperties", "additionalItems", "unevaluatedProperties", "unevaluatedItems",
               "contains", "propertyNames", "not", "if", "then", "else")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems", "items")


class SchemaError(UsageError):
    """A ``response_format`` or JSON schema that cannot be used; the message names the problem.

    Attributes:
        status: the HTTP status a server answers (400; 413 for :class:`SchemaTooLarge`).
        code: the OpenAI error code ("invalid_response_format").
    """

    status = 400
    code = "invalid_response_format"


class SchemaTooLarge(SchemaError):
    """The schema's JSON text is over ``SchemaLimits.max_bytes`` (HTTP 413)."""

    status = 413
    code = "response_format_too_large"


@dataclass(frozen=True)
class SchemaLimits:
    """What a schema may hold before it is compiled (OpenAI's structured-output limits, where it
    has one: 1,000 enum values, 120,000 characters of names and values).

    Attributes:
        max_bytes: bytes of the schema as compact JSON text (UTF-8); over it: 413.
        max_depth: objects and arrays nested inside one another in the schema document.
        max_nodes: JSON values in the schema document (objects, arrays, strings, numbers...).
        max_enum_values: ``enum`` values in all subschemas together.
        max_properties: ``properties`` entries in all subschemas together.
        max_string_chars: characters of property names, ``$defs`` names, and string ``enum``
            and ``const`` values together.
    """

    max_bytes: int = 256 * 1024
    max_depth: int = 64
    max_nodes: int = 20_000
    max_enum_values: int = 1_000
    max_properties: int = 1_000
    max_string_chars: int = 120_000

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_depth", "max_nodes", "max_enum_values", "max_properties", "max_string_chars"):
            if getattr(self, name) < 1:
                raise UsageError(f"schema limit {name} must be >= 1, got {getattr(self, name)}")


def parse_schema_text(text: str, limits: SchemaLimits) -> Any:
    """A schema given as JSON text, parsed; its length is checked first.

    Raises:
        SchemaTooLarge: more than ``limits.max_bytes`` bytes.
        SchemaError: not valid JSON, or nested too deeply for the parser.
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limits.max_bytes:
        raise SchemaTooLarge(f"the JSON schema is {size:,} bytes; at most {limits.max_bytes:,} are accepted")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SchemaError(f"response_format.json_schema.schema is not valid JSON: {exc}") from None
    except RecursionError:
        raise SchemaError(f"the JSON schema is nested too deeply to parse; at most {limits.max_depth} levels "
                          "of objects and arrays are accepted") from None


def check_schema_limits(schema: Any, limits: SchemaLimits) -> str:
    """Check ``schema`` (a parsed JSON schema) against ``limits`` and for ``$ref`` s and cycles
    xgrammar cannot use; return its compact JSON text (the compile cache key).

    Args:
        schema: the schema document (dict or bool; other types are refused).
        limits: the sizes to enforce.

    Returns:
        The schema's compact JSON text (``schema_text``).

    Raises:
        SchemaTooLarge: its JSON text is over ``limits.max_bytes``.
        SchemaError: it is not an object, passes another limit, holds a ``$ref`` that is not a
            local JSON pointer (``#`` or ``#/...``) or does not resolve, or admits no finite
            JSON value (a ``$ref`` cycle with no way out; the message names the cycle).
    """
    if not isinstance(schema, (dict, bool)):
        raise SchemaError(f"a JSON schema must be an object, got {type(schema).__name__}")
    _check_document(schema, limits)
    text = schema_text(schema)
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limits.max_bytes:
        raise SchemaTooLarge(f"the JSON schema is {size:,} bytes; at most {limits.max_bytes:,} are accepted")
    _SchemaGraph(schema, limits).check()
    return text


def schema_text(schema: Any) -> str:
    """A schema's compact JSON text (UTF-8 characters kept, keys in the order given): the text
    xgrammar compiles and the compile cache's key. Raises RecursionError or ValueError for a
    value json cannot write."""
    return json.dumps(schema, ensure_ascii=False, separators=(",", ":"))


def _check_document(doc: Any, limits: SchemaLimits) -> None:
    """Depth, node count and a lower bound of the JSON size, in one iterative walk that stops at
    the first container past a limit (bytes first: 413), so it costs about ``max_nodes`` steps."""
    stack: list[tuple[Any, int]] = [(doc, 1)] if isinstance(doc, (dict, list)) else []
    nodes, size = 1, 0
    while stack:
        value, depth = stack.pop()
        if depth > limits.max_depth:
            raise SchemaError(f"the JSON schema is nested more than {limits.max_depth} levels deep (objects "
                              "and arrays inside one another)")
        if isinstance(value, dict):
            size += 1 + sum(len(k) + 4 for k in value)  # {"k":v,...}: quotes, colon, comma or brace
            children: Any = value.values()
        else:
            size += 1 + max(1, len(value))  # [v,...]: commas and the brackets
            children = value
        nodes += len(children)
        for child in children:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
            else:
                size += len(child) + 2 if isinstance(child, str) else 1
        if size > limits.max_bytes:
            raise SchemaTooLarge(f"the JSON schema is at least {size:,} bytes; at most {limits.max_bytes:,} are "
                                 "accepted")
        if nodes > limits.max_nodes:
            raise SchemaError(f"the JSON schema has more than {limits.max_nodes:,} values (objects, arrays, "
                              "strings, numbers); simplify it")


def _pointer(path: tuple) -> str:
    """A JSON pointer fragment (``#/properties/a``) for a path of keys and indices."""
    return "#" + "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


class _SchemaGraph:
    """The subschemas of one schema as a graph: which must hold for which to have a value.

    Each subschema has a list of *requirements*, each a list of subschemas of which at least one
    must admit a value (``$ref``: its target; ``allOf``: one requirement per branch;
    ``anyOf``/``oneOf``: one requirement of all branches; ``"type": "object"``: each required
    property; ``"type": "array"``: the items up to ``minItems``; ``false``: one empty
    requirement). A subschema is *productive* when each requirement has a productive member,
    computed as a least fixpoint (Horn satisfiability, linear in the edges). Anything not
    modelled counts as satisfiable, so the check only refuses schemas that surely have no value.
    """

    def __init__(self, schema: Any, limits: SchemaLimits) -> None:
        self.root, self.limits = schema, limits
        self.paths: list[tuple] = []
        self.index: dict[tuple, int] = {}
        self.nodes: list[Any] = []
        self.needs: list[list[list[int]]] = []

    def check(self) -> None:
        """Raise SchemaError for the first problem found (see ``check_schema_limits``)."""
        self._collect()
        for i, node in enumerate(self.nodes):
            self.needs.append(self._requirements(i, node))
        productive = self._productive()
        cycle = self._dead_cycle(productive)
        if cycle:
            chain = " -> ".join(_pointer(self.paths[i]) for i in cycle)
            raise SchemaError(f"the JSON schema admits no finite JSON value: {chain} is a cycle with no way out "
                              "(a $ref loop, or a required property or array item that contains itself); give "
                              "the recursion an end (an optional property, an anyOf branch, an array that may be "
                              "empty)")
        if not productive[0]:
            where = self._dead_end(productive)
            raise SchemaError(f"the JSON schema admits no JSON value: the subschema at {where} can never be "
                              "satisfied (false, or an empty anyOf/oneOf)")

    def _collect(self) -> None:
        """Every subschema reachable through the schema keywords, with its path; counts the enum
        values, properties and characters as it goes."""
        enum_values = properties = chars = 0
        stack: list[tuple[Any, tuple]] = [(self.root, ())]
        while stack:
            node, path = stack.pop()
            if path in self.index:
                continue
            self.index[path] = len(self.nodes)
            self.nodes.append(node)
            self.paths.append(path)
            if not isinstance(node, dict):
                continue
            if isinstance(node.get("enum"), list):
                enum_values += len(node["enum"])
                chars += sum(len(v) for v in node["enum"] if isinstance(v, str))
            if isinstance(node.get("const"), str):
                chars += len(node["const"])
            for key in _SCHEMA_MAPS:
                sub = node.get(key)
                if isinstance(sub, dict):
                    chars += sum(len(name) for name in sub)
                    if key == "properties":
                        properties += len(sub)
                    stack.extend((v, path + (key, name)) for name, v in sub.items() if isinstance(v, (dict, bool)))
            for key in _SCHEMA_ONE:
                if isinstance(node.get(key), (dict, bool)):
                    stack.append((node[key], path + (key,)))
            for key in _SCHEMA_LISTS:
                if isinstance(node.get(key), list):
                    stack.extend((v, path + (key, j)) for j, v in enumerate(node[key]) if isinstance(v, (dict, bool)))
        lim = self.limits
        for count, limit, what in ((enum_values, lim.max_enum_values, "enum values"),
                                   (properties, lim.max_properties, "properties"),
                                   (chars, lim.max_string_chars, ("characters of property names, $defs names and "
                                                                  "enum/const strings"))):
            if count > limit:
                raise SchemaError(f"the JSON schema has {count:,} {what} in all; at most {limit:,} are accepted")

    def _requirements(self, i: int, node: Any) -> list[list[int]]:
        if node is False:
            return [[]]
        if not isinstance(node, dict):
            return []
        path, needs = self.paths[i], []
        if "$ref" in node:
            target = self._resolve(node["$ref"], path)
            if target is not None:
                needs.append([target])
        for key in ("allOf", "anyOf", "oneOf"):
            branches = node.get(key)
            if isinstance(branches, list) and all(isinstance(b, (dict, bool)) for b in branches):
                ids = [self.index[path + (key, j)] for j in range(len(branches))]
                needs.extend([[b] for b in ids] if key == "allOf" else [ids])
        kind = node.get("type")
        if kind == "object" and isinstance(node.get("required"), list) and isinstance(node.get("properties"), dict):
            props = node["properties"]
            needs.extend([self.index[path + ("properties", name)]] for name in node["required"]
                         if isinstance(name, str) and isinstance(props.get(name), (dict, bool)))
        if kind == "array":
            needs.extend(self._array_requirements(node, path))
        return needs

    def _array_requirements(self, node: dict, path: tuple) -> list[list[int]]:
        least = node.get("minItems")
        if not isinstance(least, int) or isinstance(least, bool) or least < 1:
            return []
        prefix = node.get("prefixItems") if isinstance(node.get("prefixItems"), list) else []
        needs = [[self.index[path + ("prefixItems", j)]] for j in range(min(least, len(prefix)))
                 if isinstance(prefix[j], (dict, bool))]
        if least > len(prefix) and isinstance(node.get("items"), (dict, bool)):
            needs.append([self.index[path + ("items",)]])
        return needs

    def _resolve(self, ref: Any, path: tuple) -> int | None:
        """The subschema a ``$ref`` names (None: a place that is no subschema of ours, left to
        xgrammar). Raises SchemaError for a remote or unresolvable reference."""
        where = _pointer(path)
        if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")):
            raise SchemaError(f"$ref {ref!r} at {where} is not supported: only local references into this "
                              "schema are ('#' or a JSON pointer such as '#/$defs/name')")
        value, target = self.root, []
        for token in ref[2:].split("/") if ref != "#" else []:
            token = token.replace("~1", "/").replace("~0", "~")
            if isinstance(value, dict) and token in value:
                value = value[token]
                target.append(token)
            elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
                value = value[int(token)]
                target.append(int(token))
            else:
                raise SchemaError(f"$ref {ref!r} at {where} does not resolve: no {token!r} in "
                                  f"{_pointer(tuple(target))}")
        return self.index.get(tuple(target))

    def _productive(self) -> list[bool]:
        n = len(self.nodes)
        productive, open_needs = [False] * n, [len(needs) for needs in self.needs]
        met = [[False] * len(needs) for needs in self.needs]
        watchers: list[list[tuple[int, int]]] = [[] for _ in range(n)]
        for i, needs in enumerate(self.needs):
            for k, members in enumerate(needs):
                for m in members:
                    watchers[m].append((i, k))
        ready = [i for i in range(n) if open_needs[i] == 0]
        while ready:
            m = ready.pop()
            if productive[m]:
                continue
            productive[m] = True
            for i, k in watchers[m]:
                if not met[i][k]:
                    met[i][k] = True
                    open_needs[i] -= 1
                    if open_needs[i] == 0:
                        ready.append(i)
        return productive

    def _unmet(self, i: int, productive: list[bool]) -> list[int]:
        """Members of ``i``'s requirements that no productive member meets (the edges of a dead end)."""
        return [m for members in self.needs[i] if not any(productive[x] for x in members) for m in members]

    def _dead_cycle(self, productive: list[bool]) -> list[int]:
        """A cycle among subschemas with no value (iterative DFS, linear), as node ids from its
        first node back to it; [] when there is none."""
        state = [0] * len(self.nodes)  # 0 new, 1 on the current path, 2 done
        for start in range(len(self.nodes)):
            if productive[start] or state[start]:
                continue
            path, stack = [start], [iter(self._unmet(start, productive))]
            state[start] = 1
            while stack:
                nxt = next(stack[-1], None)
                if nxt is None:
                    state[path.pop()] = 2
                    stack.pop()
                elif state[nxt] == 1:
                    return path[path.index(nxt):] + [nxt]
                elif state[nxt] == 0:
                    state[nxt] = 1
                    path.append(nxt)
                    stack.append(iter(self._unmet(nxt, productive)))
        return []

    def _dead_end(self, productive: list[bool]) -> str:
        """Where the root's lack of a value comes from: the first unsatisfiable subschema reached."""
        i = 0
        while True:
            unmet = self._unmet(i, productive)
            if not unmet:
                return _pointer(self.paths[i])
            i = unmet[0]
