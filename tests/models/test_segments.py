"""The sentence splitter of --task translate, on real BBC articles and on arbitrary text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parainfer.models.segments import join_segments, split_segments


@pytest.fixture(scope="module")
def bbc_texts() -> list[str]:
    from parainfer.platform import datasets

    lines = Path(datasets.fetch("bbc")).read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines[::45]]  # 50 articles across the 5 topics


def test_bbc_articles_split_into_sentences_and_join_back_byte_for_byte(bbc_texts):
    for text in bbc_texts:
        pieces = split_segments(text)
        assert "".join(pieces) == text
        segments, separators = pieces[0::2], pieces[1::2]
        # every paragraph break is a separator of its own, kept as it was
        assert sum(s.count("\n\n") for s in separators) == text.count("\n\n")
        assert all("\n" not in s for s in segments)
        # sentences, not paragraphs: more segments than paragraphs, none absurdly long
        assert len(segments) > text.count("\n\n") + 1
        assert max(len(s) for s in segments) <= 600


def test_a_sentence_ends_at_its_full_stop_but_not_at_abbreviations_or_initials():
    text = ("Mr. Greenspan spoke in the U.S. on Friday. Prices rose 2.5% in Jan. last year! "
            "J. Smith said: \"It works.\" Then he left.\n\nNew paragraph? Yes.")
    segments = split_segments(text)[0::2]
    assert segments == ["Mr. Greenspan spoke in the U.S. on Friday.", "Prices rose 2.5% in Jan. last year!",
                        "J. Smith said: \"It works.\"", "Then he left.", "New paragraph?", "Yes."]


def test_a_long_run_without_full_stops_is_cut_at_commas_or_spaces_under_the_limit():
    text = ", ".join(f"clause number {i} of a very long list" for i in range(60))
    pieces = split_segments(text, max_chars=200)
    assert "".join(pieces) == text
    assert all(0 < len(s) <= 200 for s in pieces[0::2])
    assert all(s.endswith(",") for s in pieces[0:-1:2])  # cut after a comma, not inside a clause


def test_join_puts_translations_between_the_original_separators():
    pieces = split_segments("One.  Two.\n\n  Three.")
    assert join_segments(pieces, ["Um.", "Dois.", "Três."]) == "Um.  Dois.\n\n  Três."
    with pytest.raises(ValueError, match="2 translations for 3 segments"):
        join_segments(pieces, ["Um.", "Dois."])


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab .!?\n\t,;\"'()AZ1é…")), max_size=400),
       st.integers(min_value=20, max_value=80))
def test_any_text_round_trips_and_no_segment_exceeds_the_limit(text: str, max_chars: int):
    pieces = split_segments(text, max_chars=max_chars)
    assert "".join(pieces) == text and len(pieces) % 2 == 1
    assert all(len(s) <= max_chars for s in pieces[0::2])
    assert join_segments(pieces, pieces[0::2]) == text
