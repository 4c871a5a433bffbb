"""Structured output: token masks from a JSON schema (xgrammar), per sequence, in the batched step.

``GrammarCompiler`` compiles a request's OpenAI ``response_format`` (``json_object`` or
``json_schema``; ``text`` or None is unconstrained) once per distinct schema against the
engine's tokenizer; each sequence gets its own ``GrammarState`` (an ``xgrammar.GrammarMatcher``)
that gives the sampler its token mask and advances with each accepted token. JSON is emitted
compactly (``any_whitespace=False``). References: xgrammar (Dong et al. 2024,
https://arxiv.org/abs/2411.15100); OpenAI's ``response_format``. How, and why xgrammar:
docs/generation.md, "Structured output".
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

import torch

from parainfer.errors import UsageError

RESPONSE_FORMAT_TYPES = ("text", "json_object", "json_schema")
_CPP_PREFIX = re.compile(r"^\[[^\]]*\]\s*\S+:\d+:\s*")
_TOKENIZER_INFO: dict[tuple, tuple[Any, Any]] = {}  # (id(tokenizer), vocab, eos) -> (tokenizer, TokenizerInfo)
_INFO_LOCK = threading.Lock()


def schema_of(response_format: dict | None) -> str | None:
    """The JSON schema text a ``response_format`` asks for; None when unconstrained.

    Args:
        response_format: OpenAI's ``{"type": "text" | "json_object" | "json_schema", ...}``;
            for "json_schema", ``json_schema.schema`` is the schema (a dict, or a JSON string).

    Returns:
        The schema as JSON text, properties in the order given (the compile cache key), ``'{"type":
        "object"}'`` for json_object, None for text / None.

    Raises:
        UsageError: an unknown type, or a json_schema without a ``schema`` object.
    """
    if response_format is None:
        return None
    if not isinstance(response_format, dict) or response_format.get("type") not in RESPONSE_FORMAT_TYPES:
        got = response_format.get("type") if isinstance(response_format, dict) else response_format
        raise UsageError(f"response_format type {got!r} is not supported; accepted: "
                         f"{', '.join(RESPONSE_FORMAT_TYPES)}")
    kind = response_format["type"]
    if kind == "text":
        return None
    if kind == "json_object":
        return '{"type": "object"}'
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise UsageError(f"response_format.json_schema.schema is not valid JSON: {exc}") from None
    if not isinstance(schema, dict):
        raise UsageError("response_format json_schema needs json_schema.schema, a JSON schema object; got "
                         f"{type(schema).__name__}")
    return json.dumps(schema)


def _xgrammar() -> Any:
    """The xgrammar module; UsageError naming the extra to install when it is missing."""
    try:
        import xgrammar
    except ImportError:
        raise UsageError("structured output (response_format / --json-schema) needs the xgrammar package: "
                         "pip install 'parainfer[structured]'") from None
    return xgrammar


def _compile_options(schema: str) -> dict[str, Any]:
    # json_object: a free-form object, so properties are not closed (strict mode would allow only {}).
    return dict(any_whitespace=False, separators=(",", ":"), strict_mode=schema != '{"type": "object"}')


def _clean(exc: Exception) -> str:
    """xgrammar's message without its C++ "[time] file.cc:line:" prefix."""
    return _CPP_PREFIX.sub("", str(exc).strip()).splitlines()[0] if str(exc).strip() else type(exc).__name__


def check_schema(response_format: dict | None) -> None:
    """Raise UsageError naming the problem unless xgrammar can turn ``response_format`` into a
    grammar (needs no tokenizer: the cheap check the CLI runs before any model loads)."""
    schema = schema_of(response_format)
    if schema is None:
        return
    xgr = _xgrammar()
    try:
        xgr.Grammar.from_json_schema(schema, **_compile_options(schema))
    except Exception as exc:  # noqa: BLE001 - xgrammar raises RuntimeError for every bad schema
        raise UsageError(f"the JSON schema cannot be compiled: {_clean(exc)}") from None


def load_schema_file(path: str) -> dict:
    """The ``response_format`` of a JSON-schema file (``--json-schema FILE``).

    Raises:
        UsageError: the file is missing or unreadable, not JSON, or not a JSON object.
    """
    from pathlib import Path

    try:
        schema = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"--json-schema {path!r} cannot be read: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"--json-schema {path!r} is not valid JSON: {exc}") from None
    if not isinstance(schema, dict):
        raise UsageError(f"--json-schema {path!r} must hold a JSON schema object, got {type(schema).__name__}")
    return {"type": "json_schema", "json_schema": {"name": Path(path).stem, "schema": schema}}


class GrammarCompiler:
    """Compiles response formats against one tokenizer; one per engine, thread-safe.

    Args:
        tokenizer: the engine's HF tokenizer.
        vocab_size: the model's logits width (may exceed ``len(tokenizer)``).
        eos_ids: the engine's end-of-sequence ids: a finished grammar allows only these.

    The xgrammar tokenizer info (about 1-5 s for a 49k vocabulary) is built on first use.
    """

    def __init__(self, tokenizer: Any, vocab_size: int, eos_ids: set[int]) -> None:
        self.tokenizer, self.vocab_size, self.eos_ids = tokenizer, vocab_size, sorted(eos_ids)
        self._compiler: Any = None
        self._cache: dict[str, Any] = {}
        self._lock = threading.Lock()

    def compile(self, response_format: dict | None) -> Any:
        """The compiled grammar of ``response_format`` (an ``xgrammar.CompiledGrammar``), None
        when unconstrained.

        Raises:
            UsageError: a malformed response_format, or a schema xgrammar cannot compile
                (the message names xgrammar's reason).
        """
        schema = schema_of(response_format)
        if schema is None:
            return None
        with self._lock:
            if schema not in self._cache:
                self._cache[schema] = self._compile(schema)
            return self._cache[schema]

    def _compile(self, schema: str) -> Any:
        xgr = _xgrammar()

        if self._compiler is None:
            self._compiler = xgr.GrammarCompiler(self._tokenizer_info(xgr), max_threads=1)
        try:
            return self._compiler.compile_json_schema(schema, **_compile_options(schema))
        except Exception as exc:  # noqa: BLE001 - xgrammar raises RuntimeError for every bad schema
            raise UsageError(f"the JSON schema cannot be compiled: {_clean(exc)}") from None

    def _tokenizer_info(self, xgr: Any) -> Any:
        """xgrammar's view of the vocabulary, shared by the engines of one tokenizer (a rebuilt
        engine, the engines of a test session) since it takes seconds to build."""
        key = (id(self.tokenizer), self.vocab_size, tuple(self.eos_ids))
        with _INFO_LOCK:
            if key not in _TOKENIZER_INFO:
                info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.vocab_size,
                                                          stop_token_ids=self.eos_ids)
                _TOKENIZER_INFO[key] = (self.tokenizer, info)  # the tokenizer is held: its id stays unique
            return _TOKENIZER_INFO[key][1]

    def state(self, response_format: dict | None) -> GrammarState | None:
        """A fresh per-sequence state for ``response_format`` (None when unconstrained)."""
        compiled = self.compile(response_format)
        return None if compiled is None else GrammarState(compiled, self.vocab_size)


class GrammarState:
    """One sequence's position in its grammar (an ``xgrammar.GrammarMatcher``)."""

    def __init__(self, compiled: Any, vocab_size: int) -> None:
        self.matcher = _xgrammar().GrammarMatcher(compiled)
        self.vocab_size = vocab_size

    def accept(self, token: int) -> None:
        """Advance past ``token``. Raises RuntimeError if the grammar refuses it (the mask let
        it through: a bug; the engine fails that one sequence)."""
        if not self.matcher.accept_token(int(token)):
            raise RuntimeError(f"token {token} is not allowed by the sequence's grammar")

    @property
    def is_terminated(self) -> bool:
        """True once the grammar has accepted an end-of-sequence token."""
        return bool(self.matcher.is_terminated())


def mask_logits(logits: torch.Tensor, states: list[GrammarState | None]) -> dict[int, Exception]:
    """Set the logits each row's grammar forbids next to -inf, in place, for the whole batch.

    Args:
        logits: [B, vocab] float32 logits of one step.
        states: B entries, a :class:`GrammarState` for a constrained row, None for a free one.

    Returns:
        {row: exception} for rows whose mask could not be computed (the engine fails those
        sequences alone); their logits are left as they were.

    Each constrained row's bitmask is filled by its own matcher (xgrammar's per-token work);
    the masks are then applied in one call (one call for 32 rows costs about what one call for
    a single row does).
    """
    rows = [i for i, state in enumerate(states) if state is not None]
    if not rows:
        return {}
    xgr = _xgrammar()
    bitmask = xgr.allocate_token_bitmask(logits.shape[0], logits.shape[1])
    failed: dict[int, Exception] = {}
    for i in rows:
        try:
            states[i].matcher.fill_next_token_bitmask(bitmask, i)  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - fails only this sequence
            failed[i] = exc
    ok = [i for i in rows if i not in failed]
    if ok:
        xgr.apply_token_bitmask_inplace(logits, bitmask, vocab_size=logits.shape[1], indices=ok)
    return failed
