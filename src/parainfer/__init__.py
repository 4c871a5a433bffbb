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


def __getattr__(name: str):  # PEP 562: lazy attributes
    if name in ("run", "predict", "Pool"):
        from parainfer import api

        return getattr(api, name)
    if name in ("ParainferError", "UsageError", "JobError", "RecordsFailed"):
        from parainfer import errors

        return getattr(errors, name)
    if name == "Interrupted":
        from parainfer.batch.recovery import Interrupted

        return Interrupted
    if name == "datasets":
        import importlib

        return importlib.import_module("parainfer.platform.datasets")
    raise AttributeError(f"module 'parainfer' has no attribute {name!r}")
