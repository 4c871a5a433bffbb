"""Which data path a job takes: record mode (``record_mode.RecordDriver``) or sharded
mode (``shard_mode.ShardDriver``).

``--shard-mode auto | on | off``; see ``choose_mode`` and docs/sharded.md.
"""

from __future__ import annotations

import os
from typing import Any

from parainfer.errors import UsageError
from parainfer.io.checkpoint import read_manifest
from parainfer.io.shards.store import MODE, is_dir_output, store_paths
from parainfer.io.shards.plan import SPLITTABLE

SHARD_MODES = ("auto", "on", "off")
AUTO_MIN_BYTES = 64 << 20  # auto: inputs from this size on run sharded
OUTPUTS = (".jsonl", ".ndjson", ".csv", ".parquet")


def why_not_sharded(config: Any, in_memory: bool) -> str | None:
    """Why this job cannot run in sharded mode, or None when it can. Every output format of
    record mode (JSONL, CSV, Parquet), ``--task-timeout`` and ``--batch-size auto`` run sharded,
    on either executor (on Ray, every node must see the input and the output's folder at the same
    path: ``executors.ray_shards`` checks it); stdout output, stdin or other input and OpenAI batch
    files do not."""
    ext = os.path.splitext(config.input)[1].lower()
    if in_memory:
        return "an in-memory job (the Python API) has no input file to split"
    if config.input == "-" or ext not in SPLITTABLE:
        return f"the input must be a file ({', '.join(SPLITTABLE)}), not {config.input!r}"
    if config.output == "-":
        return "stdout output is one stream that only the driver can write in order (write a file)"
    if not is_dir_output(config.output) and os.path.splitext(config.output)[1].lower() not in OUTPUTS:
        return f"the output must be a {'/'.join(OUTPUTS)} file or a folder, not {config.output!r}"
    if config.task == "openai-batch":
        return "an OpenAI batch file runs in record mode"
    return None


def choose_mode(config: Any, in_memory: bool = False) -> str:
    """"sharded" or "records" for ``config.shard_mode`` (auto | on | off).

    An output folder (``--output DIR/``) always runs sharded (UsageError when it cannot, or
    with ``off``). auto: sharded when the job can run sharded, its input is at least ``AUTO_MIN_BYTES`` (or
    an unfinished sharded checkpoint of this output is there to resume), and no unfinished
    record-mode checkpoint is (that one resumes in record mode). A finished checkpoint always
    goes to record mode, which verifies the output and answers "already complete". Raises UsageError for
    ``on`` when the job cannot run sharded, naming why, and for an unknown mode."""
    mode = getattr(config, "shard_mode", "auto")
    if mode not in SHARD_MODES:
        raise UsageError(f"--shard-mode {mode!r} is not one of {', '.join(SHARD_MODES)}")
    folder = not in_memory and is_dir_output(config.output)
    if mode == "off":
        if folder:
            raise UsageError(f"--output {config.output!r} is a folder: only sharded mode keeps parts in a "
                             "folder; use --shard-mode auto or on, or an output file")
        return "records"
    reason = why_not_sharded(config, in_memory)
    if (mode == "on" or folder) and reason:
        what = "--shard-mode on" if mode == "on" else f"--output {config.output!r} (a folder of parts)"
        raise UsageError(f"{what} needs sharded mode, but {reason}; use an output file and --shard-mode auto or off")
    if reason:
        return "records"
    old = None if config.overwrite else _manifest(config.output)
    if old is not None and old.get("finished") and not folder:
        return "records"  # record mode answers "already complete" (after verifying the output)
    if mode == "on" or folder:
        return "sharded"
    if old is not None:
        return "sharded" if old.get("mode") == MODE else "records"
    return "sharded" if os.path.getsize(config.input) >= AUTO_MIN_BYTES else "records"


def _manifest(output: str) -> dict[str, Any] | None:
    try:
        return read_manifest(store_paths(output)[0])
    except UsageError:
        return None
