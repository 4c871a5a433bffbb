"""The output side of sharded mode: committed parts in a manifest, concatenated at the end.

``ShardStore`` owns ``OUTPUT.parainfer-shards/`` (one output and one errors part per shard,
named by the shard's start and task index), the commits in shard order (each part's range,
sizes and SHA-256 into the manifest ``OUTPUT.parainfer-checkpoint.json``, ``"mode":
"sharded"``, written as ``io.checkpoint`` writes it), the verification on resume, and the
final concatenation into OUTPUT and the errors file; or, for an output folder
(``is_dir_output``), the parts kept in DIR with ``DIR/manifest.json``. The rules:
docs/sharded.md, "Output formats", "--output DIR/" and "How the parts are stored".
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

from parainfer.errors import UsageError
from parainfer.io import digest
from parainfer.io.checkpoint import (VERSION, _differences, check_errors_file, check_parts_folder, job_fingerprint,
                                     manifest_path, read_manifest, write_manifest)
from parainfer.io.guard import check_not_foreign
from parainfer.io.parquet_parts import assemble
from parainfer.io.safe_files import (atomic_write, check_regular_or_absent, foreign_names, make_own_dir, open_file,
                                     remove_own)
from parainfer.io.shards.part_sinks import csv_header_line, output_format
from parainfer.io.shards.plan import Shard
from parainfer.io.sinks import default_errors_path, dumps_bytes

PARTS_SUFFIX = ".parainfer-shards"
MODE = "sharded"
DIR_MANIFEST = "manifest.json"


def is_dir_output(output: str) -> bool:
    """True when ``output`` names a folder to keep the parts in: it ends with "/" or is an
    existing folder."""
    return output != "-" and (output.endswith("/") or os.path.isdir(output))


def store_paths(output: str, errors: str | None = None) -> tuple[str, str, str]:
    """(manifest, parts folder, errors file) of a sharded job writing ``output``."""
    if is_dir_output(output):
        folder = output.rstrip("/") or "/"
        return os.path.join(folder, DIR_MANIFEST), folder, errors or default_errors_path(folder)
    return manifest_path(output), output + PARTS_SUFFIX, errors or default_errors_path(output)


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
        saved_records: records in the committed shards of the manifest on disk (the last
            ``save``): what a rerun resumes from.

    Raises:
        UsageError: the manifest belongs to another job (and not ``overwrite``), or a committed
            part was changed or lost since it was committed.
    """

    def __init__(self, config: Any, source: Any, predictor: Any, start: tuple[int, int]):
        self.output = config.output
        self.keep_parts = is_dir_output(config.output)
        self.format = output_format(config.output)
        self.path, self.folder, self.errors_path = store_paths(config.output, config.errors)
        self.job = job_fingerprint(config, source, predictor)
        if self.keep_parts:
            self.job["output_format"] = self.format + "/"
            _check_dir(self.folder, self.path)
        check_regular_or_absent(self.path, "checkpoint", one_name=False)
        old = None if config.overwrite else read_manifest(self.path)
        check_not_foreign(config.output, old is not None, config.overwrite)
        if old is not None and old.get("job") != self.job:
            raise UsageError(f"output {config.output!r} has a checkpoint from a different job "
                             f"({_differences(old.get('job') or {}, self.job)}); rerun with --overwrite to "
                             "start over, or choose another --output")
        check_errors_file(old, self.errors_path, config.overwrite)
        if self.keep_parts:  # the output folder may hold the user's files (never deleted): its parts are checked
            foreign_names(self.folder, _is_dir_own, "part in output folder")
        else:
            check_parts_folder(self.folder, config.overwrite, "shards folder", _is_part)
        self.committed: list[dict[str, Any]] = []
        self.header: Any = None  # the job's CSV header / Parquet schema bytes (io.shards.part_sinks)
        self.next_start, self.next_line = start
        self.finished = False
        # As ``io.checkpoint.Checkpoint``'s: kept in the manifest from run to run.
        self.numerics: dict[str, Any] | None = None
        self.determinism: dict[str, Any] | None = None
        self.determinism_state: Any = None
        if old is not None and old.get("mode") == MODE and old.get("finished") and self.keep_parts:
            self._resume(old, finished=True)  # verifies every part: "already complete"
            self.finished = True
        elif old is not None and old.get("mode") == MODE and not old.get("finished"):
            self.numerics, self.determinism = old.get("numerics"), old.get("determinism")
            self._resume(old)
        else:
            remove_own(self.folder, _is_dir_own if self.keep_parts else _is_part)
            self._make_folder()
            self._write(finished=False)
        self.resumed_records, self.resumed_failed = self.records_done, self.failed
        self.saved_records = self.records_done

    @property
    def records_done(self) -> int:
        return sum(e["records"] for e in self.committed)

    @property
    def failed(self) -> int:
        return sum(e["failed"] for e in self.committed)

    def part_paths(self, shard: Shard, task_index: int) -> tuple[str, str]:
        """(output part, errors part) of shard task ``task_index`` (one attempt at ``shard``)."""
        stem = os.path.join(self.folder, f"{shard.start:015d}-t{task_index}")
        return stem + self.format, stem + ".errors.jsonl"

    def fits(self, result: Any) -> bool:
        """True when a finished part's header (CSV columns, Parquet schema) is the job's, or it
        has none; the first part with a header sets the job's. A part that does not fit is
        redone with the job's header (``batch.shard_mode.ShardDriver``)."""
        if result.header is None or self.header is None:
            return True
        return result.header == self.header

    def _make_folder(self) -> None:
        """Create the parts folder: the shards folder is parainfer's (never a link); an output
        folder is the user's to name, as an output file is (a link to a folder is followed)."""
        if self.keep_parts:
            os.makedirs(self.folder, exist_ok=True)
        else:
            make_own_dir(self.folder, "shards folder")

    def _resume(self, old: dict[str, Any], finished: bool = False) -> None:
        self._make_folder()
        keep = {DIR_MANIFEST} if self.keep_parts else set()
        header = old.get("header")
        self.header = bytes.fromhex(header) if self.format == ".parquet" and header else header
        for entry in old.get("committed", []):
            checks = [(entry["part"], entry["out_bytes"], entry["out_sha256"])]
            if not finished:  # a finished folder's errors parts are in the errors file
                checks.append((entry["errors_part"], entry["err_bytes"], entry["err_sha256"]))
            for name, size, sha in checks:
                path = os.path.join(self.folder, name)
                if size and (why := digest.mismatch(path, size, sha)):
                    raise UsageError(f"committed part {path!r} was changed or lost since its checkpoint: {why}; "
                                     "rerun with --overwrite to start over")
                keep.add(name)
        remove_own(self.folder, _is_part, keep)  # partial parts of shards that were not committed
        self.committed = list(old.get("committed", []))
        self.next_start, self.next_line = old["next_start"], old["next_line"]

    def commit(self, shard: Shard, part: str, errors_part: str, result: Any) -> None:
        """Commit the next shard in order (its parts are fsynced by the worker; durable at the
        next ``save``). Its first line
        number is where the previous one ended (``next_line``); a shard the worker numbered from
        1 (``first_line`` 0) is marked ``relative`` and its errors are shifted in ``finish``."""
        first = self.next_line
        if self.header is None and result.header is not None:
            self.header = result.header
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
        finished, remove the parts (and the folder, unless files parainfer did not write are
        in it). Returns (output bytes, errors bytes).

        The output is copied in the kernel (``os.copy_file_range``) and not hashed again: the
        finished manifest keeps each part's size and digest (``output_ranges_sha256``), which
        is what a rerun verifies (``digest.ranges_match``). The errors file (small) is hashed.
        CSV: the header line first; Parquet: assembled (``io.parquet_parts.assemble``) and
        hashed whole. A folder output keeps its parts (see the module doc)."""
        parts = [os.path.join(self.folder, e["part"]) for e in self.committed]
        ranges: list[list[Any]] | None = [[e["out_bytes"], e["out_sha256"]] for e in self.committed if e["out_bytes"]]
        out_sha = None
        if self.keep_parts:
            out_bytes = sum(e["out_bytes"] for e in self.committed)
        elif self.format == ".parquet":
            import pyarrow as pa

            schema = pa.ipc.read_schema(pa.py_buffer(self.header)) if self.header else None
            with atomic_write(self.output) as out:
                assemble(out, [p for p, e in zip(parts, self.committed) if e["out_bytes"]], schema)
            out_bytes, out_sha, ranges = os.path.getsize(self.output), digest.file_digest(self.output), None
        else:
            head = csv_header_line(self.header) if self.format == ".csv" and self.header else b""
            out_bytes, _ = _concat(self.output, parts, False, head)
            if head:
                h = digest.new()
                h.update(head)
                ranges = [[len(head), h.hexdigest()]] + ranges  # type: ignore[operator]
        err_parts = [e for e in self.committed if e["err_bytes"]]
        if err_parts:
            err_bytes, err_sha = _concat_errors(self.errors_path, self.folder, err_parts)
        else:
            err_bytes, err_sha = 0, digest.new().hexdigest()
            if check_regular_or_absent(self.errors_path, "errors file"):
                os.remove(self.errors_path)  # a stale errors file of an older run of this output
        write_manifest(self.path, {
            "version": VERSION, "mode": MODE, "job": self.job, "records_done": self.records_done,
            "failed_records": self.failed, "output_bytes": out_bytes, "output_parts": 0, "errors_bytes": err_bytes,
            "output_sha256": out_sha, "errors_sha256": err_sha, "errors_file": os.path.abspath(self.errors_path),
            "sink": {}, "finished": True,
            "shards": len(self.committed), "header": self._header_json(),
            "next_start": self.next_start, "next_line": self.next_line, "numerics": self.numerics,
            "determinism": self.determinism_state() if self.determinism_state else self.determinism,
            **({"committed": self.committed, "parts": [e["part"] for e in self.committed if e["out_bytes"]]}
               if self.keep_parts
               else {"output_ranges_sha256": ranges})},
            compact=True)
        if self.keep_parts:
            for e in self.committed:  # the errors are in the errors file; a part without rows goes
                remove_quietly(os.path.join(self.folder, e["errors_part"]))
                if not e["out_bytes"]:
                    remove_quietly(os.path.join(self.folder, e["part"]))
        else:
            remove_own(self.folder, _is_part, rmdir=True)  # files parainfer did not write stay, and the folder
        return out_bytes, err_bytes

    def _header_json(self) -> Any:
        return self.header.hex() if isinstance(self.header, bytes) else self.header

    def _write(self, finished: bool) -> None:
        write_manifest(self.path, {
            "version": VERSION, "mode": MODE, "job": self.job, "records_done": self.records_done,
            "failed_records": self.failed, "output_bytes": 0, "output_parts": 0, "errors_bytes": 0,
            "next_start": self.next_start, "next_line": self.next_line, "committed": self.committed,
            "errors_file": os.path.abspath(self.errors_path), "header": self._header_json(), "finished": finished,
            "numerics": self.numerics,
            "determinism": self.determinism_state() if self.determinism_state else self.determinism},
            compact=True)
        self.saved_records = self.records_done


def _check_dir(folder: str, manifest: str) -> None:
    """An output folder: its parent must exist; an existing one must be empty or hold a
    manifest (a folder parainfer wrote). Raises UsageError naming the folder otherwise."""
    parent = os.path.dirname(os.path.abspath(folder))
    if not os.path.isdir(parent):
        raise UsageError(f"output folder's parent {parent!r} does not exist; create it or choose another path")
    if os.path.isfile(folder):
        raise UsageError(f"output {folder!r} is a file; an output ending in '/' is a folder for the parts")
    if os.path.isdir(folder) and os.listdir(folder) and not os.path.isfile(manifest):
        raise UsageError(f"output folder {folder!r} is not empty and has no {DIR_MANIFEST} (not written by "
                         "parainfer); parainfer never deletes files it did not write: choose an empty or new folder")


def remove_quietly(path: str) -> None:
    """Delete ``path`` if it exists."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def _is_dir_own(name: str) -> bool:
    """A file parainfer writes in an output folder: its manifest or a part (``_is_part``)."""
    return name == DIR_MANIFEST or _is_part(name)


def _is_part(name: str) -> bool:
    """A file name ``ShardStore.part_paths`` makes (or a worker's timeout note, or the Ray
    executor's shared-file-system probe left by a killed driver: ``executors.ray_shards``)."""
    if name.startswith(".parainfer-fs-probe-"):
        return True
    stem = name.split("-t", 1)[0]
    return len(stem) == 15 and stem.isdigit()


def _concat(dest: str, parts: list[str], hashed: bool, head: bytes = b"") -> tuple[int, str | None]:
    """Write ``head`` then the parts one after the other into ``dest`` (through a temp file,
    fsynced, then renamed); returns (bytes, hex SHA-256 when ``hashed``, else None: then the
    copy runs in the kernel, ``os.copy_file_range``, where the platform has it)."""
    h, size = digest.new(), len(head)
    h.update(head)
    with atomic_write(dest) as out:
        out.write(head)
        out.flush()
        for part in parts:
            with open_file(part, "rb", "shard part") as f:
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
    with atomic_write(dest) as out:
        for e in entries:
            with open_file(os.path.join(folder, e["errors_part"]), "rb", "shard errors part") as f:
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
