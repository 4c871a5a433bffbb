"""Sharded mode on the Ray executor: the shared-file-system check, and shard results on the driver's clock.

A Ray actor runs a ``ShardTask`` with the same ``batch.shard_runner.run_shard`` as a local
worker process, so every node must see the input file and the parts folder at the same path.
Before its first shard each actor checks that (``check_paths``): the input exists with the size
the driver sees, the parts folder holds the driver's probe file (``Probe``) with its random
token, and the folder is writable. A failed check raises ``SharedPathError``, which the executor
turns into a ``UsageError`` naming the node, the path and the fix (exit code 2). More:
docs/sharded.md, "On Ray: a shared file system".
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from typing import Any

from parainfer.io.safe_files import open_file

PROBE_PREFIX = ".parainfer-fs-probe-"
FIX = ("sharded mode on Ray needs every node to see the input file and the output's folder at the same path "
       "(a shared file system: mount it on every node at the same path), or run with --shard-mode off "
       "(the records then pass through the driver)")


class SharedPathError(RuntimeError):
    """A node does not see the job's input or parts folder as the driver does (the message says
    which node, which path, what is wrong and how to fix it)."""


@dataclass(frozen=True, slots=True)
class PathCheck:
    """What an actor checks before its first shard (made by the driver, ``Probe.check_for``).

    Attributes:
        input: the input file's path; input_size: its size in bytes as the driver sees it.
        probe: the probe file in the parts folder; token: its content (hex).
    """

    input: str
    input_size: int
    probe: str
    token: str


class Probe:
    """The driver's side: writes one probe file per parts folder (on the first shard submitted
    there, again with a new token when it is gone: a later job of a ``parainfer.Pool`` on the
    same output) and removes them all in ``remove`` (the executor's shutdown)."""

    def __init__(self) -> None:
        self._checks: dict[tuple[str, str], PathCheck] = {}

    def check_for(self, task: Any) -> PathCheck:
        """The ``PathCheck`` for a ShardTask (its input path and the folder of its parts).

        Raises OSError when the probe cannot be written (the driver's own folder is not writable)."""
        folder = os.path.dirname(os.path.abspath(task.part))
        size = os.path.getsize(task.input.path)
        key = (task.input.path, folder)
        check = self._checks.get(key)
        # new, or the input changed or the probe's folder was removed (a later job of a Pool)
        if check is None or check.input_size != size or not os.path.exists(check.probe):
            if check is not None:
                _remove(check.probe)
            token = secrets.token_hex(16)
            probe = os.path.join(folder, f"{PROBE_PREFIX}{os.getpid()}-{token[:8]}")
            with open_file(probe, "x", "shared-file-system probe") as f:  # a new name: never a planted file
                f.write(token)
            check = self._checks[key] = PathCheck(os.path.abspath(task.input.path), size, probe, token)
        return check

    def remove(self) -> None:
        """Delete the probe files written so far."""
        for check in self._checks.values():
            _remove(check.probe)
        self._checks.clear()


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def check_paths(check: PathCheck, node: str) -> None:
    """Run on the actor (node ``node``, an address): does it see the driver's input and parts folder?

    Raises:
        SharedPathError: the input is missing or of another size, the probe is missing or holds
            another token (another folder of the same name), or the folder is not writable.
    """
    folder = os.path.dirname(check.probe)

    def fail(path: str, what: str) -> SharedPathError:
        return SharedPathError(f"node {node} cannot see {path!r} as the driver does ({what}); {FIX}")

    try:
        size = os.path.getsize(check.input)
    except OSError as e:
        raise fail(check.input, f"input file: {e.strerror or e}") from None
    if size != check.input_size:
        raise fail(check.input, f"input file of {size:,} bytes there, {check.input_size:,} on the driver")
    try:
        with open(check.probe, encoding="ascii") as f:
            token = f.read()
    except OSError as e:
        raise fail(folder, f"output parts folder: the driver's probe file is not there: {e.strerror or e}") from None
    if token != check.token:
        raise fail(folder, "output parts folder: another folder of that name (the driver's probe file differs)")
    mine = f"{check.probe}.w{os.getpid()}"
    try:
        with open_file(mine, "w", "shared-file-system probe") as f:
            f.write(node)
        os.remove(mine)
    except (OSError, ValueError) as e:  # ValueError: a UsageError for a link there (not followed)
        raise fail(folder, f"output parts folder not writable: {getattr(e, 'strerror', None) or e}") from None


def shared_path_error(error: BaseException) -> str | None:
    """The SharedPathError message inside a Ray task error, or None when ``error`` is another error."""
    cause = getattr(error, "cause", None)
    for e in (error, cause):
        if isinstance(e, SharedPathError):
            return str(e.args[0]) if e.args else str(e)
    return None


def place_shard_result(result: Any, start: float, queue_s: float) -> Any:
    """Put a ShardResult measured on the actor's clock on the driver's: ``start`` is its start on
    the driver's clock; its compute time (t_end - t_start, measured on the actor) and ``queue_s``
    (waiting for its turn in the actor) are kept as durations."""
    compute_s = result.t_end - result.t_start
    result.t_received, result.t_start, result.t_end = start - queue_s, start, start + compute_s
    return result

