"""What fixes a job's numbers besides its input and options: the compute dtype, the intra-op
thread count and the library versions; recorded in the checkpoint, held on a resume.

``record`` makes the entry a manifest keeps (``"numerics"``); ``resume_numerics`` reads it back
before a resume starts its workers: the recorded dtype (``--dtype auto`` decided once) and
thread count are used again; different library versions refuse the resume with one line (exit
2) unless ``PARAINFER_RESUME_ANY_VERSIONS=1`` forces it (the run is then reported not
deterministic). docs/fault-tolerance.md, "Same numbers on a resume".
"""

from __future__ import annotations

import os
from importlib import metadata
from typing import Any

from parainfer.errors import UsageError

LIBRARIES = ("parainfer", "torch", "transformers", "onnxruntime")
FORCE_ENV = "PARAINFER_RESUME_ANY_VERSIONS"


def library_versions() -> dict[str, str]:
    """{name: version} of the ``LIBRARIES`` installed here (missing ones left out)."""
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def record(dtype: str | None, threads: int | None) -> dict[str, Any]:
    """The manifest's ``numerics`` entry: {"dtype": the resolved compute dtype (None: the model
    has none), "threads_per_worker": intra-op threads of every worker, "versions": ...}."""
    return {"dtype": dtype, "threads_per_worker": threads, "versions": library_versions()}


def resume_numerics(recorded: dict[str, Any] | None, threads_asked: int | None,
                    output: str) -> tuple[str | None, int | None, list[str]]:
    """What a resume must run with: (recorded dtype or None, recorded threads or None, notes
    for the report's determinism). ``threads_asked``: ``--threads-per-worker`` (None: not given).

    Raises UsageError (one line) when the libraries' versions differ from the recorded ones and
    ``FORCE_ENV`` is not "1", or ``threads_asked`` differs from the recorded thread count."""
    if not recorded:
        return None, threads_asked, []
    notes = []
    was, now = recorded.get("versions") or {}, library_versions()
    changed = [f"{k} {was.get(k, 'absent')} -> {now.get(k, 'absent')}" for k in sorted(set(was) | set(now))
               if was.get(k) != now.get(k)]
    if changed:
        what = ", ".join(changed)
        if os.environ.get(FORCE_ENV) != "1":
            raise UsageError(f"output {output!r} was started with other library versions ({what}); its resume would "
                             f"not compute the same numbers: rerun with --overwrite to start over, or set {FORCE_ENV}=1 "
                             "to resume anyway")
        notes.append(f"resumed with other library versions ({what}), forced by {FORCE_ENV}=1")
    threads = recorded.get("threads_per_worker")
    if threads_asked and threads and threads_asked != threads:
        raise UsageError(f"output {output!r} was started with --threads-per-worker {threads}, not {threads_asked}; "
                         f"resume with {threads} (or leave it out), or rerun with --overwrite to start over")
    return recorded.get("dtype"), threads or threads_asked, notes
