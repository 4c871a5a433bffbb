"""parainfer: parallel batch inference and serving for language models.

The data path of a batch job is source -> tasks -> scheduler -> executor (N workers, one
model replica each) -> merger -> sink; see docs/architecture.md.

The Python API (docs/api.md): ``parainfer.run`` for files, ``parainfer.predict`` for data in
memory, ``parainfer.Pool`` to keep the model loaded between calls, and ``parainfer.datasets``.
They are imported on first use, so ``import parainfer`` stays cheap for the workers.
"""

__version__ = "0.1.0"
__all__ = ["run", "predict", "Pool", "datasets", "ParainferError", "UsageError", "JobError", "RecordsFailed",
           "Interrupted"]


# Lazy attributes (PEP 562) by module name: ``import parainfer`` loads none of the layers below.
_LAZY = {"run": "parainfer.api", "predict": "parainfer.api", "Pool": "parainfer.api",
         "ParainferError": "parainfer.errors", "UsageError": "parainfer.errors", "JobError": "parainfer.errors",
         "RecordsFailed": "parainfer.errors", "Interrupted": "parainfer.batch.recovery"}


def __getattr__(name: str):
    import importlib

    if name == "datasets":
        return importlib.import_module("parainfer.platform.datasets")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'parainfer' has no attribute {name!r}")
