"""parainfer: parallel batch inference and serving for language models.

The data path of a batch job is source -> tasks -> scheduler -> executor (N workers, one
model replica each) -> merger -> sink; see docs/architecture.md.
"""

__version__ = "0.1.0"
