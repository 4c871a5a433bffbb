"""Cut a document into sentences for translation, and put the translations back in place.

``split_segments(text)`` returns the pieces in order, alternating text and separator, so that
``"".join(pieces) == text``; ``join_segments`` puts translated text pieces back between the
original separators. A separator is a line break (with the blank lines and indentation around
it), the whitespace after a sentence end, or, in a run longer than ``max_chars`` with no
sentence end, the last ``;``, ``,`` or space before the limit. The rule is a plain punctuation
heuristic that errs towards not splitting; its details: docs/models.md, "Machine translation".
"""

from __future__ import annotations

import re

# Words that end with a full stop without ending a sentence (English and Portuguese), lower case.
ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr sra srta jr st mt no nos vol vs etc e.g i.e cf al approx dept est fig inc ltd co corp "
    "gen gov sen rep col lt sgt capt jan feb mar apr jun jul aug sep sept oct nov dec u.s u.k u.n p.m a.m "
    "av pág pp ex dra exa exmo".split()
)
MAX_SEGMENT_CHARS = 600

_LINE_BREAK = re.compile(r"[ \t]*(?:\r?\n[ \t]*)+")
_SENTENCE_END = re.compile(r"""(?<=[.!?…])["'”’»)\]]*(\s+)(?=["'“‘«(\[]?[A-ZÀ-ÖØ-Þ0-9])""")
_WORD_BEFORE = re.compile(r"([\w.]+)\.$")
_INITIALISM = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")  # u.s, e.g, p.m


def split_segments(text: str, max_chars: int = MAX_SEGMENT_CHARS) -> list[str]:
    """Cut ``text`` into [segment, separator, segment, separator, ..., segment].

    Args:
        text: one record's text (any length).
        max_chars: the longest segment, in characters (>= 20).

    Returns:
        An odd-length list: even positions are segments to translate (they may be empty or
        whitespace at the ends of ``text``), odd positions separators to keep as they are;
        ``"".join(result) == text``.
    """
    pieces: list[str] = []
    pos = 0
    for brk in _LINE_BREAK.finditer(text):
        if brk.start() == brk.end():
            continue
        _split_line(text[pos:brk.start()], max_chars, pieces)
        pieces.append(brk.group())
        pos = brk.end()
    _split_line(text[pos:], max_chars, pieces)
    return pieces


def join_segments(pieces: list[str], translated: list[str]) -> str:
    """Put ``translated`` (one string per even position of ``pieces``) back between the separators.

    Raises:
        ValueError: ``translated`` does not hold one string per segment.
    """
    segments = pieces[0::2]
    if len(translated) != len(segments):
        raise ValueError(f"{len(translated)} translations for {len(segments)} segments")
    out = []
    for i, seg in enumerate(translated):
        if i:
            out.append(pieces[2 * i - 1])
        out.append(seg)
    return "".join(out)


def _split_line(line: str, max_chars: int, pieces: list[str]) -> None:
    """Append one line's sentences (and the spaces between them) to ``pieces``."""
    start = 0
    for end in _SENTENCE_END.finditer(line):
        if _is_abbreviation(line[start:end.start(1)]):
            continue
        _cap(line[start:end.start(1)], max_chars, pieces)
        pieces.append(end.group(1))
        start = end.end(1)
    _cap(line[start:], max_chars, pieces)


def _is_abbreviation(sentence: str) -> bool:
    sentence = sentence.rstrip("\"'”’»)]")
    if not sentence.endswith("."):
        return False
    m = _WORD_BEFORE.search(sentence)
    if m is None:
        return False
    word = m.group(1).lower()
    return word in ABBREVIATIONS or (len(word) == 1 and word.isalpha()) or bool(_INITIALISM.fullmatch(word))


def _cap(sentence: str, max_chars: int, pieces: list[str]) -> None:
    """Append ``sentence``, cut at the last ``;`` ``,`` or space before each ``max_chars`` limit."""
    while len(sentence) > max_chars:
        head = sentence[:max_chars]
        cut = max(head.rfind("; "), head.rfind(", "))
        cut = cut + 1 if cut > max_chars // 3 else head.rfind(" ")
        if cut <= 0:
            cut = max_chars  # one unbroken word: cut inside it
            pieces.extend([sentence[:cut], ""])
            sentence = sentence[cut:]
            continue
        space = len(sentence[cut:]) - len(sentence[cut:].lstrip())
        pieces.extend([sentence[:cut], sentence[cut:cut + max(space, 0)]])
        sentence = sentence[cut + space:]
    pieces.append(sentence)
