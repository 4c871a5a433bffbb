"""scikit-learn classifiers saved with skops (``parainfer train --backend sklearn``).

skops loads only types it trusts (scikit-learn estimators, numpy, scipy); a file holding any
other type is refused with the list of those types unless the user passes ``--trust`` (then
the listed types are trusted for this file). Never pickle or joblib.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from parainfer.errors import UsageError
from parainfer.models.base import Predictor


# scikit-learn's own parts of CalibratedClassifierCV (``train --backend sklearn``'s default
# classifier), which skops does not list as trusted: plain data holders of fitted coefficients.
SKLEARN_TRUSTED = ("sklearn.calibration._CalibratedClassifier", "sklearn.calibration._SigmoidCalibration")


def load_skops(path: str | os.PathLike, trust: bool = False) -> Any:
    """Load a skops file; returns the estimator. Trusted without ``trust``: skops' defaults
    (scikit-learn estimators, numpy, scipy) and ``SKLEARN_TRUSTED``.

    Raises:
        UsageError: the file holds other types and ``trust`` is False (the message lists them
            and says to pass --trust if the file's source is trusted).
    """
    import skops.io as sio

    found = sio.get_untrusted_types(file=str(path))
    untrusted = [t for t in found if t not in SKLEARN_TRUSTED]
    if untrusted and not trust:
        raise UsageError(f"{str(path)!r} holds types skops does not trust by default: {', '.join(untrusted)}; "
                         "pass --trust to load it anyway (only for files from a source you trust)")
    return sio.load(str(path), trusted=found or None)


class SklearnPredictor(Predictor):
    """``--task classify`` with a scikit-learn estimator that has ``predict_proba`` (a Pipeline
    from raw texts to classes, as ``parainfer train --backend sklearn`` makes).

    Args:
        model_path: the .skops file.
        labels: the classes in the order of ``predict_proba``'s columns, each of the type it
            had in the training data (the manifest's); checked against the text of the
            estimator's ``classes_`` on load (``parainfer train`` fits on the labels' text).
            None: the estimator's classes, as strings.
        trust: trust the file's non-default types (``--trust``).

    Output per text: ``label`` (the most probable class, from ``labels``: an integer label stays
    an integer) and ``score`` (its probability).
    """

    task = "classify"

    def __init__(self, model_path: str | os.PathLike, labels: list[str] | None = None, trust: bool = False):
        self.model_path = Path(model_path)
        self.labels = labels
        self.trust = trust
        self._model: Any = None

    def load(self) -> None:
        """Load the estimator (checked by skops); raises UsageError for untrusted types."""
        self._model = load_skops(self.model_path, self.trust)
        classes = [str(c) for c in self._model.classes_]
        if self.labels is not None and classes != [str(label) for label in self.labels]:
            raise UsageError(f"{str(self.model_path)!r} has classes {classes}, but its manifest says {self.labels}")
        if self.labels is None:
            self.labels = classes

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Class probabilities [B, C] (float64), columns in ``labels`` order."""
        return np.asarray(self._model.predict_proba(texts))

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        """Classify B texts; returns B dicts {"label": one of ``labels``, "score": float}."""
        probs = self.predict_proba(texts)
        best = probs.argmax(axis=1)
        return [{"label": self.labels[i], "score": float(probs[r, i])} for r, i in enumerate(best)]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_model": None}

    def describe(self) -> dict[str, Any]:
        return {"class": type(self).__name__, "task": self.task, "model": str(self.model_path),
                "backend": "sklearn", "labels": self.labels}
