"""Model-free helpers for the generation tests (a unique module name, imported by path)."""

from __future__ import annotations

from parainfer.generation.detokenizer import IncrementalDetokenizer
from parainfer.generation.sampling_params import SamplingParams
from parainfer.generation.sequence import Sequence


class _CharTokenizer:
    """Stands in for a tokenizer where no model is needed: token i decodes to one "x"."""

    def decode(self, ids, **kw):
        return "x" * len(ids)


def seq(n_tokens: int, rid: str = "r") -> Sequence:
    """A WAITING sequence with an ``n_tokens`` prompt, for model-free scheduler tests."""
    return Sequence(rid, list(range(n_tokens)), SamplingParams(), IncrementalDetokenizer(_CharTokenizer(), [], []))
