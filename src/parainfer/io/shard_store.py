"""The output side of sharded mode: committed parts in a manifest, concatenated at the end.

Workers write one output part and one errors part per shard into ``OUTPUT.parainfer-shards/``
(names carry the shard's start and the shard task's index, so a redone shard never shares a file with a
discarded partial one). The driver commits parts strictly in shard order: a commit appends the
part's range, sizes and SHA-256 digests to the manifest (``OUTPUT.parainfer-checkpoint.json``,
the same file and atomic write as ``io.checkpoint``, with ``"mode": "sharded"``). At the end the
parts are concatenated into OUTPUT and the errors file (hashing as they are copied), the
manifest is marked finished in the record-mode shape (``records_done``, ``output_bytes``,
``output_sha256``, ...; so a rerun in either mode answers "already complete" after verifying
the digest) and the parts folder is removed.

A rerun after a killed driver verifies every committed part against its digest (UsageError
when one was changed or lost), deletes every other file in the folder (partial parts), and
plans shards for the rest of the input only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from typing import Any, BinaryIO, Iterator

from parainfer.errors import UsageError
from parainfer.io import digest
from parainfer.io.checkpoint import VERSION, _differences, job_fingerprint, manifest_path, read_manifest, write_manifest
from parainfer.io.guard import check_not_foreign
from parainfer.io.parquet_parts import fsync_dir
from parainfer.io.shards import Shard
from parainfer.io.sinks import default_errors_path, dumps_bytes

PARTS_SUFFIX = ".parainfer-shards"
MODE = "sharded"


class ShardStore:
    """Opens (or resumes) the parts folder and manifest of a sharded job.

    Args:
        config: the JobConfig; source: the opened Source; predictor: the unloaded Predictor
            (these two make the job fingerprint, as in ``io.checkpoint``).
        start: ``(offset, first_line)`` where the input's records begin (fresh start).

    Attributes:
        path: the manifest path. folder: the parts folder. errors_path: the errors file.
        committed: manifest entries of the committed shards, in order.
        next_start, next_line: where the uncommitted rest of the input begins.
        records_done, failed: records (and failed ones) in the committed shards.

    Raises:
        UsageError: the manifest belongs to another job (and not ``overwrite``), or a committed
            part was changed or lost since it was committed.
    """

    def __init__(self, config: Any, source: Any, predictor: Any, start: tuple[int, int]):
        self.output = config.output
        self.path = manifest_path(config.output)
        self.folder = config.output + PARTS_SUFFIX
        self.errors_path = config.errors or default_errors_path(config.output)
        self.job = job_fingerprint(config, source, predictor)
        old = None if config.overwrite else read_manifest(self.path)
        check_not_foreign(config.output, old is not None, config.overwrite)
        if old is not None and old.get("job") != self.job:
            raise UsageError(f"output {config.output!r} has a checkpoint from a different job "
                             f"({_differences(old.get('job') or {}, self.job)}); rerun with --overwrite to "
                             "start over, or choose another --output")
        self.committed: list[dict[str, Any]] = []
        self.next_start, self.next_line = start
        if old is not None and old.get("mode") == MODE and not old.get("finished"):
            self._resume(old)
        else:
            shutil.rmtree(self.folder, ignore_errors=True)
            os.makedirs(self.folder)
            self._write(finished=False)
        self.resumed_records, self.resumed_failed = self.records_done, self.failed

    @property
    def records_done(self) -> int:
        return sum(e["records"] for e in self.committed)

    @property
    def failed(self) -> int:
        return sum(e["failed"] for e in self.committed)

    def part_paths(self, shard: Shard, task_index: int) -> tuple[str, str]:
        """(output part, errors part) of shard task ``task_index`` (one attempt at ``shard``)."""
        stem = os.path.join(self.folder, f"{shard.start:015d}-t{task_index}")
        return stem + ".jsonl", stem + ".errors.jsonl"

    def _resume(self, old: dict[str, Any]) -> None:
        os.makedirs(self.folder, exist_ok=True)
        keep = set()
        for entry in old.get("committed", []):
            for name, size, sha in ((entry["part"], entry["out_bytes"], entry["out_sha256"]),
                                    (entry["errors_part"], entry["err_bytes"], entry["err_sha256"])):
                path = os.path.join(self.folder, name)
                if size and (not os.path.isfile(path) or os.path.getsize(path) != size
                             or digest.file_digest(path) != sha):
                    raise UsageError(f"committed part {path!r} was changed or lost since its checkpoint; rerun "
                                     "with --overwrite to start over")
                keep.add(name)
        for name in os.listdir(self.folder):  # partial parts of shards that were not committed
            if name not in keep:
                os.remove(os.path.join(self.folder, name))
        self.committed = list(old.get("committed", []))
        self.next_start, self.next_line = old["next_start"], old["next_line"]

    def commit(self, shard: Shard, part: str, errors_part: str, result: Any) -> None:
        """Commit the next shard in order (its parts are fsynced by the worker; durable at the
        next ``save``). Its first line
        number is where the previous one ended (``next_line``); a shard the worker numbered from
        1 (``first_line`` 0) is marked ``relative`` and its errors are shifted in ``finish``."""
        first = self.next_line
        self.committed.append({
            "start": shard.start, "end": shard.end, "first_line": first, "relative": shard.first_line == 0,
            "part": os.path.basename(part), "errors_part": os.path.basename(errors_part),
            "records": result.records, "failed": result.failed, "out_bytes": result.out_bytes,
            "out_sha256": result.out_sha256, "err_bytes": result.err_bytes, "err_sha256": result.err_sha256})
        self.next_start, self.next_line = shard.end, first + result.lines

    def save(self) -> None:
        """Write the manifest with the shards committed so far (atomically, durably). The driver
        calls it every ``--checkpoint-every`` seconds and at the end, not per shard: the manifest
        lists every committed shard, so writing it per shard would cost O(shards^2)."""
        self._write(finished=False)

    def finish(self) -> tuple[int, int]:
        """Concatenate the committed parts into the output and the errors file, mark the job
        finished, remove the parts folder. Returns (output bytes, errors bytes).

        The output is copied in the kernel (``os.copy_file_range``) and not hashed again: the
        finished manifest keeps each part's size and digest (``output_ranges_sha256``), which
        is what a rerun verifies (``digest.ranges_match``). The errors file (small) is hashed."""
        out_bytes, _ = _concat(self.output, [os.path.join(self.folder, e["part"]) for e in self.committed], False)
        err_parts = [e for e in self.committed if e["err_bytes"]]
        if err_parts:
            err_bytes, err_sha = _concat_errors(self.errors_path, self.folder, err_parts)
        else:
            err_bytes, err_sha = 0, digest.new().hexdigest()
            if os.path.isfile(self.errors_path):
                os.remove(self.errors_path)  # a stale errors file of an older run of this output
        write_manifest(self.path, {
            "version": VERSION, "mode": MODE, "job": self.job, "records_done": self.records_done,
            "failed_records": self.failed, "output_bytes": out_bytes, "output_parts": 0, "errors_bytes": err_bytes,
            "output_sha256": None, "errors_sha256": err_sha, "sink": {}, "finished": True,
            "shards": len(self.committed),
            "output_ranges_sha256": [[e["out_bytes"], e["out_sha256"]] for e in self.committed if e["out_bytes"]]},
            compact=True)
        shutil.rmtree(self.folder, ignore_errors=True)
        return out_bytes, err_bytes

    def _write(self, finished: bool) -> None:
        write_manifest(self.path, {
            "version": VERSION, "mode": MODE, "job": self.job, "records_done": self.records_done,
            "failed_records": self.failed, "output_bytes": 0, "output_parts": 0, "errors_bytes": 0,
            "next_start": self.next_start, "next_line": self.next_line, "committed": self.committed,
            "finished": finished}, compact=True)


@contextlib.contextmanager
def _atomic_file(dest: str) -> Iterator[BinaryIO]:
    """An open temp file next to ``dest``; on a clean exit it is fsynced and renamed over
    ``dest`` (and the folder fsynced), so readers see the old file or the whole new one."""
    tmp = dest + ".parainfer-tmp"
    with open(tmp, "wb") as out:
        yield out
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, dest)
    fsync_dir(os.path.dirname(dest) or ".")


def _concat(dest: str, parts: list[str], hashed: bool) -> tuple[int, str | None]:
    """Write the parts one after the other into ``dest`` (through a temp file, fsynced, then
    renamed); returns (bytes, hex SHA-256 when ``hashed``, else None: then the copy runs in
    the kernel, ``os.copy_file_range``, where the platform has it)."""
    h, size = digest.new(), 0
    with _atomic_file(dest) as out:
        for part in parts:
            with open(part, "rb") as f:
                if not hashed and hasattr(os, "copy_file_range"):
                    left = os.fstat(f.fileno()).st_size
                    while left > 0:
                        n = os.copy_file_range(f.fileno(), out.fileno(), left)
                        if n == 0:
                            break
                        left -= n
                        size += n
                    continue
                while chunk := f.read(digest.CHUNK * 4):
                    if hashed:
                        h.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
    return size, h.hexdigest() if hashed else None


def _concat_errors(dest: str, folder: str, entries: list[dict[str, Any]]) -> tuple[int, str]:
    """The errors file from the committed errors parts, in order; a ``relative`` part's line
    numbers (counted from 1 at its shard's start) are shifted to the file's. Returns (bytes,
    hex SHA-256)."""
    h, size = digest.new(), 0
    with _atomic_file(dest) as out:
        for e in entries:
            with open(os.path.join(folder, e["errors_part"]), "rb") as f:
                data = f.read()
            if e.get("relative") and e["first_line"] != 1:
                rows = [json.loads(x) for x in data.splitlines()]
                for row in rows:
                    row["line"] += e["first_line"] - 1
                data = b"".join(dumps_bytes(row) + b"\n" for row in rows)
            h.update(data)
            out.write(data)
            size += len(data)
    return size, h.hexdigest()
