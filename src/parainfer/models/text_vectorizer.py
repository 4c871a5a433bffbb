"""Text -> integer sequences for the Keras LSTM classifier, the way Keras' ``TextVectorization``
does it with its defaults, in plain Python (so that no backend needs TensorFlow).

Keras 3's ``TextVectorization`` layer runs on TensorFlow whatever ``KERAS_BACKEND`` is; to let
the model train and run on PyTorch without TensorFlow installed, parainfer reimplements its
default behaviour (keras.io/api/layers/preprocessing_layers/text/text_vectorization):
``standardize="lower_and_strip_punctuation"`` (lowercase, delete ASCII punctuation),
``split="whitespace"``, vocabulary = the most frequent ``max_tokens - 2`` tokens of the
training texts (ties: first seen first), index 0 = padding, 1 = out-of-vocabulary, and
``output_sequence_length`` (truncate or pad with 0 at the end).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np

# The punctuation Keras strips (tf_utils DEFAULT_STRIP_REGEX): ASCII punctuation.
_STRIP = re.compile(r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']')
PAD, OOV = 0, 1


def standardize(text: str) -> list[str]:
    """Lowercase, strip punctuation, split on whitespace: the tokens of ``text``."""
    return _STRIP.sub("", text.lower()).split()


class TextVectorizer:
    """A fitted vocabulary and sequence length.

    Args:
        vocabulary: tokens for indices 2, 3, ... (0 is padding, 1 out-of-vocabulary).
        sequence_length: every output row has this many ids.
    """

    def __init__(self, vocabulary: list[str], sequence_length: int):
        self.vocabulary = list(vocabulary)
        self.sequence_length = int(sequence_length)
        self._index = {tok: i + 2 for i, tok in enumerate(self.vocabulary)}

    @classmethod
    def fit(cls, texts: list[str], max_tokens: int = 20_000, sequence_length: int = 48) -> "TextVectorizer":
        """Build the vocabulary from training texts (most frequent first, at most max_tokens - 2)."""
        counts = Counter(tok for text in texts for tok in standardize(text))
        return cls([tok for tok, _ in counts.most_common(max_tokens - 2)], sequence_length)

    @property
    def vocab_size(self) -> int:
        """Embedding rows needed: len(vocabulary) + 2."""
        return len(self.vocabulary) + 2

    def __call__(self, texts: list[str]) -> np.ndarray:
        """Token ids [B, sequence_length] int32 (0-padded at the end, truncated at the end)."""
        out = np.zeros((len(texts), self.sequence_length), dtype=np.int32)
        for r, text in enumerate(texts):
            ids = [self._index.get(tok, OOV) for tok in standardize(text)[:self.sequence_length]]
            out[r, :len(ids)] = ids
        return out

    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens per text before truncation."""
        return [len(standardize(t)) for t in texts]

    def save(self, path: str | Path) -> None:
        """Write {"vocabulary": [...], "sequence_length": n} as JSON."""
        Path(path).write_text(json.dumps({"vocabulary": self.vocabulary, "sequence_length": self.sequence_length}),
                              encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "TextVectorizer":
        """Read a file written by ``save``."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(data["vocabulary"], data["sequence_length"])
