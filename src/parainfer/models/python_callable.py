"""A plain Python callable as the model: ``--model module:function``.

The function takes a list of B texts and returns B JSON-able results. A dict result is
merged into the output row; any other value goes under the ``result`` column.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable

from parainfer.errors import UsageError
from parainfer.models.base import Predictor


def resolve_callable(spec: str) -> Callable[[list[str]], list[Any]]:
    """Import ``module:function`` (dotted attribute paths allowed after the colon).

    The current directory is put on sys.path so a user's own module next to the data works.
    Raises UsageError naming the spec when the module or attribute is missing or not callable.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UsageError(f"callable model {spec!r} must look like module:function")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise UsageError(f"cannot import module {module_name!r} for model {spec!r}: {e}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"module {module_name!r} has no attribute {attr!r} (model {spec!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UsageError(f"model {spec!r} is not callable")
    return obj


class CallablePredictor(Predictor):
    """Wraps ``module:function``; resolved in each worker on ``load``.

    Args:
        spec: "module:function".
        task: the output kind it produces (default "custom").
    """

    def __init__(self, spec: str, task: str = "custom"):
        resolve_callable(spec)  # fail fast in the driver with a clear message
        self.spec = spec
        self.task = task
        self._fn: Callable[[list[str]], list[Any]] | None = None

    def load(self) -> None:
        self._fn = resolve_callable(self.spec)

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        """Call the function on B texts; raises ValueError if it returns a wrong count."""
        assert self._fn is not None, "load() first"
        out = list(self._fn(texts))
        if len(out) != len(texts):
            raise ValueError(f"callable {self.spec} returned {len(out)} results for {len(texts)} texts")
        return [r if isinstance(r, dict) else {"result": r} for r in out]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fn": None}

    def describe(self) -> dict[str, Any]:
        return {"class": "CallablePredictor", "task": self.task, "model": self.spec}
