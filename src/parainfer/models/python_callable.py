"""A plain Python callable as the model: ``--model module:function``.

The function takes a list of B texts and returns B JSON-able results. A dict result is
merged into the output row; any other value goes under the ``result`` column. A function of the
driver's ``__main__`` (a script, ``python -c``, stdin, a notebook: the Python API's
``model=function``) travels to the workers by value (cloudpickle), since workers never import
the driver's main module; any other one is imported by name in each worker.
"""

from __future__ import annotations

import importlib
import pickle
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


def by_value(fn: Callable[..., Any], spec: str) -> bytes:
    """``fn`` pickled by value with cloudpickle: its code and the globals it uses, so a worker
    that never imported the module defining it (the driver's ``__main__``) can call it.

    Raises UsageError when cloudpickle is missing or ``fn`` refers to something that cannot be
    pickled (an open file, a lock, a live connection), naming ``spec`` and the cause."""
    try:
        import cloudpickle
    except ImportError:
        raise UsageError(f"model {spec!r} is defined in your main script; sending it to the workers needs the "
                         "cloudpickle package (pip install cloudpickle), or define it in a .py module and import "
                         "it from there") from None
    try:
        return cloudpickle.dumps(fn)
    except Exception as e:  # noqa: BLE001 - pickling raises many types (TypeError, PicklingError ...)
        raise UsageError(f"model {spec!r} cannot be sent to the worker processes: {type(e).__name__}: {e}; "
                         "define it in a .py module and import it from there (the workers then import it)") from None


class CallablePredictor(Predictor):
    """Wraps ``module:function``; resolved in each worker on ``load`` (a ``__main__`` function:
    unpickled there, see ``by_value``).

    Args:
        spec: "module:function".
        task: the output kind it produces (default "custom").

    Raises:
        UsageError: ``spec`` cannot be imported here (``resolve_callable``), or it names a
            ``__main__`` function that cannot be pickled by value (``by_value``).
    """

    def __init__(self, spec: str, task: str = "custom"):
        fn = resolve_callable(spec)  # fail fast in the driver with a clear message
        self.spec = spec
        self.task = task
        self._fn: Callable[[list[str]], list[Any]] | None = None
        self._by_value = by_value(fn, spec) if spec.partition(":")[0] == "__main__" else None

    def load(self) -> None:
        self._fn = pickle.loads(self._by_value) if self._by_value is not None else resolve_callable(self.spec)

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        """Call the function on B texts; raises ValueError if it returns a wrong count."""
        assert self._fn is not None, "load() first"
        out = list(self._fn(texts))
        if len(out) != len(texts):
            raise ValueError(f"callable {self.spec} returned {len(out)} results for {len(texts)} texts")
        return [r if isinstance(r, dict) else {"result": r} for r in out]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fn": None}

    def code_modules(self) -> list[str]:
        """The spec's module (``__main__``: the function travels by value, but the modules of
        the script's folder that it calls are named by ``executors.ray_ship``)."""
        return [self.spec.partition(":")[0]]

    def describe(self) -> dict[str, Any]:
        return {"class": "CallablePredictor", "task": self.task, "model": self.spec}
