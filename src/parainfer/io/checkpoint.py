"""The checkpoint: a small manifest next to the output that makes a rerun resume exactly once.

Owns the manifest (``OUTPUT.parainfer-checkpoint.json``; Parquet parts in
``OUTPUT.parainfer-parts/``), the job fingerprint, the atomic commit (fsync the output and the
errors file, then replace the manifest) and the resume: a rerun with the same fingerprint
verifies the committed bytes' digests, cuts both files back to their committed lengths and
skips the committed records; another fingerprint is refused unless ``overwrite``.
``OrderedErrors`` writes errors in input order once the write frontier passes them. Stdout
output or stdin input has no checkpoint. Algorithm and manifest fields: docs/fault-tolerance.md.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from typing import Any, Iterable, Iterator

from parainfer.errors import UsageError
from parainfer.io import digest
from parainfer.io.guard import check_not_foreign
from parainfer.io.ordered_errors import OrderedErrors
from parainfer.io.parquet_parts import PartedParquetSink, is_part_name, part_path
from parainfer.io.safe_files import atomic_write, check_own_dir, check_regular_or_absent, foreign_names, open_file
from parainfer.io.sinks import STDOUT, CsvSink, ErrorSink, JsonlSink, Sink, default_errors_path, open_sink

VERSION = 1
SUFFIX = ".parainfer-checkpoint.json"
PARTS_SUFFIX = ".parainfer-parts"


def manifest_path(output: str) -> str:
    """Where the manifest of ``output`` lives: ``OUTPUT.parainfer-checkpoint.json``."""
    return output + SUFFIX


def write_manifest(path: str, manifest: dict[str, Any], compact: bool = False) -> None:
    """Replace the manifest atomically and durably (``io.safe_files.atomic_write``: a temp file
    of a new name, fsync, rename, fsync folder): two processes writing it never share a temp
    file, and a link at ``path`` is replaced, never written through. ``compact``: one line, no
    indentation (the C encoder; sharded mode's manifest lists every committed shard)."""
    with atomic_write(path, text=True) as f:
        f.write(json.dumps(manifest, indent=None if compact else 1))  # dumps: the C encoder when compact


def read_manifest(path: str) -> dict[str, Any] | None:
    """The manifest at ``path``, or None when there is none. Raises UsageError when it is not a
    parainfer manifest of this version, or a link or not a regular file (``io.safe_files``)."""
    if not check_regular_or_absent(path, "checkpoint", one_name=False):
        return None
    try:
        with open_file(path, "r", "checkpoint") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise UsageError(f"checkpoint {path!r} is unreadable ({e}); delete it or rerun with --overwrite") from None
    if not isinstance(manifest, dict) or manifest.get("version") != VERSION:
        raise UsageError(f"checkpoint {path!r} is not a version-{VERSION} parainfer checkpoint; "
                         "delete it or rerun with --overwrite")
    return manifest


def errors_owned(old: dict[str, Any] | None, errors_path: str) -> bool:
    """True when the manifest ``old`` of this output lists ``errors_path`` as its errors file
    (``"errors_file"``, an absolute path; a manifest of an older parainfer, without the key,
    lists the one it was run with, taken as this one); False without a manifest."""
    if old is None:
        return False
    listed = old.get("errors_file")
    return listed is None or os.path.abspath(listed) == os.path.abspath(errors_path)


def check_errors_file(old: dict[str, Any] | None, errors_path: str, overwrite: bool) -> None:
    """Refuse (UsageError) an existing, non-empty errors file that the manifest ``old`` does not
    list (``errors_owned``), unless ``overwrite``: parainfer would cut or delete it."""
    check_not_foreign(errors_path, errors_owned(old, errors_path), overwrite, "errors file",
                      "the checkpoint next to the output does not list it" if old else "no checkpoint lists it")


def check_parts_folder(folder: str, overwrite: bool, what: str, is_own: Any) -> None:
    """Refuse a parts folder that is a link or not a folder, a part name in it that is a link or
    not a regular file, or (unless ``overwrite``) any file in it parainfer did not write
    (``is_own(name)`` False): parainfer deletes its parts folder's files, and never one it did
    not write. With ``overwrite`` such files are left in place (and the folder with them)."""
    if not check_own_dir(folder, what):
        return
    foreign = foreign_names(folder, is_own, f"part in {what}")
    if foreign and not overwrite:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise UsageError(f"{what} {folder!r} holds {foreign[0]!r}{more}, which parainfer did not write; parainfer "
                         "never deletes files it did not write: move them out, or rerun with --overwrite to run "
                         "anyway (they are left in place)")


def job_fingerprint(config: Any, source: Any, predictor: Any) -> dict[str, Any]:
    """What must not change between a job and its resume: everything that changes results.

    Batch size, workers, policy and such are left out (they change speed, not results). The
    model's dtype is the requested one (``config.dtype``), never the one resolved at load.
    """
    model = {k: v for k, v in predictor.describe().items() if k != "dtype"}
    return {"input": source.fingerprint(), "task": config.task, "model": model, "dtype": config.dtype,
            "text_column": config.text_column, "id_column": config.id_column,
            "generation": config.generation, "output_format": os.path.splitext(config.output)[1].lower()}


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> str:
    """'key: old -> new' for each differing key, nested dicts as 'model.model'."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out.append(_differences(a, b, f"{prefix}{k}."))
        elif k == "input":
            out.append(f"{prefix}input file content changed ({str(a)[:19]}... -> {str(b)[:19]}...)")
        else:
            out.append(f"{prefix}{k}: {a!r:.60} -> {b!r:.60}")
    return "; ".join(out)


class Checkpoint:
    """Opens the output and errors file for a job, resuming from the manifest when it matches.

    Args:
        config: the JobConfig (input, output, errors, overwrite, checkpoint_every_s ...).
        source: the opened Source (its ``fingerprint()`` hashes the input file).
        predictor: the unloaded Predictor (its ``describe()`` goes in the fingerprint).
        row_group_size: Parquet rows per row group in the final file.

    Attributes:
        path: the manifest path, or None when the job has no checkpoint (stdin or stdout).
        sink, errors: the output Sink and the OrderedErrors to write to.
        resumed_records, resumed_failed: K and F from the manifest (0 on a fresh start).
        finished: the manifest says this very job already finished (nothing to do; no sink).

    Raises:
        UsageError: the manifest belongs to a different job (and not ``config.overwrite``), or
            the output is shorter than its checkpoint says.
    """

    def __init__(self, config: Any, source: Any, predictor: Any, row_group_size: int = 10_000):
        self.config, self.every_s = config, getattr(config, "checkpoint_every_s", 2.0)
        self.output = config.output
        self.resumed_records = self.resumed_failed = self.committed_records = 0
        self.finished = False
        self.sink: Sink | None = None
        # Carried from run to run in the manifest: ``numerics`` (``io.numerics.record``; the
        # driver sets it once the workers are up) and the determinism state (the driver sets
        # ``determinism_state``, a callable returning the dict to keep).
        self.numerics: dict[str, Any] | None = None
        self.determinism: dict[str, Any] | None = None
        self.determinism_state: Any = None
        errors_path = config.errors or default_errors_path(config.output)
        self.errors = OrderedErrors(ErrorSink(errors_path))
        self._last_commit = time.monotonic()
        overwrite = getattr(config, "overwrite", False)
        if config.output == STDOUT or config.input == "-":
            self.path, self.job = None, None
            check_not_foreign(config.output, False, overwrite)
            check_errors_file(None, errors_path, overwrite)
            self.sink = open_sink(config.output, id_column=config.id_column, text_column=config.text_column,
                                  row_group_size=row_group_size)
            return
        self.path = manifest_path(config.output)
        self.parts = config.output + PARTS_SUFFIX if config.output.lower().endswith(".parquet") else None
        self.job = job_fingerprint(config, source, predictor)
        check_regular_or_absent(self.path, "checkpoint", one_name=False)
        old = None if overwrite else read_manifest(self.path)
        check_not_foreign(config.output, old is not None, overwrite)
        if old is not None and old.get("job") != self.job:
            raise UsageError(f"output {config.output!r} has a checkpoint from a different job "
                             f"({_differences(old.get('job') or {}, self.job)}); rerun with --overwrite to "
                             "start over, or choose another --output")
        check_errors_file(old, errors_path, overwrite)
        if self.parts is not None:
            check_parts_folder(self.parts, overwrite, "Parquet parts folder", is_part_name)
        if old is not None and old.get("finished") and os.path.isfile(self.output):
            self._verify_finished(old)
            self.finished, self.resumed_records = True, old["records_done"]
            self.resumed_failed = old.get("failed_records", 0)
            return
        if old is not None and not old.get("finished") and self._resumable(old):
            self.numerics, self.determinism = old.get("numerics"), old.get("determinism")
            self._resume(old, row_group_size)
        else:
            self._fresh(row_group_size)

    # -- opening ---------------------------------------------------------------------------

    def _resumable(self, old: dict[str, Any]) -> bool:
        """True when the committed files are there to resume from (whether they are intact is
        checked by ``_resume``); False when the output was deleted: the job starts over."""
        if self.parts is not None:
            return all(os.path.isfile(part_path(self.parts, n)) for n in range(old.get("output_parts", 0)))
        return os.path.isfile(self.output)

    def _verify_finished(self, old: dict[str, Any]) -> None:
        """Raise UsageError unless the output (and errors file) are byte for byte as finished."""
        # Sharded mode records [bytes, sha256] of each part, in order (output_ranges_sha256).
        why = digest.mismatch(self.output, old.get("output_bytes", 0), old.get("output_sha256"),
                              old.get("output_ranges_sha256"))
        if why:
            raise UsageError(f"output {self.output!r} was changed after its job finished: {why}; rerun with "
                             "--overwrite to start over")
        if old.get("errors_bytes"):
            digest.verify_prefix(self.errors.path, old["errors_bytes"], old.get("errors_sha256"), "errors file")

    def _fresh(self, row_group_size: int) -> None:
        cfg = self.config
        self.errors.sink.resume(0)  # a stale errors file belongs to an older run of this output
        if self.parts is not None:
            self.sink = PartedParquetSink(cfg.output, self.parts, cfg.id_column, cfg.text_column, row_group_size)
        else:
            self.sink = open_sink(cfg.output, id_column=cfg.id_column, text_column=cfg.text_column)
        self.commit(0, 0)

    def _resume(self, old: dict[str, Any], row_group_size: int) -> None:
        cfg = self.config
        if self.parts is not None:
            running = digest.new()
            for n in range(old.get("output_parts", 0)):
                with open(part_path(self.parts, n), "rb") as f:
                    running.update(f.read())
            if old.get("output_sha256") and running.hexdigest() != old["output_sha256"]:
                raise UsageError(f"the committed Parquet parts in {self.parts!r} were changed since the checkpoint; "
                                 "rerun with --overwrite to start over")
        else:
            offset = old.get("output_bytes", 0)
            running = digest.verify_prefix(cfg.output, offset, old.get("output_sha256"), "output")
        self.errors.sink.resume(old.get("errors_bytes", 0), old.get("errors_sha256"))
        self.resumed_records, self.resumed_failed = old["records_done"], old.get("failed_records", 0)
        self.committed_records = self.resumed_records
        if self.parts is not None:
            self.sink = PartedParquetSink(cfg.output, self.parts, cfg.id_column, cfg.text_column, row_group_size,
                                          parts=old.get("output_parts", 0))
            self.sink.digest = running
            return
        stream = open(cfg.output, "r+b")
        stream.truncate(offset)
        stream.seek(offset)
        kind = CsvSink if cfg.output.lower().endswith(".csv") else JsonlSink
        sink = kind(cfg.output, stream, cfg.id_column, cfg.text_column)
        sink.bytes_written, sink.digest = offset, running
        header = (old.get("sink") or {}).get("csv_header")
        if kind is CsvSink and header:
            sink._header, sink._known = list(header), set(header)  # the header is in the file already
        self.sink = sink

    # -- running ---------------------------------------------------------------------------

    def skip(self, records: Iterable[Any]) -> Iterator[Any]:
        """The input records after the K already committed."""
        return itertools.islice(iter(records), self.resumed_records, None)

    def advance(self, next_seq: int, failed: int) -> None:
        """After rows up to ``next_seq`` went to the sink: write their errors; commit when due
        (``every_s`` after the last commit) and when there is something new to commit.

        ``failed``: records failed in this run so far (the resumed ones are added here).
        """
        self.errors.release(next_seq)
        if (self.path is not None and next_seq != self.committed_records
                and time.monotonic() - self._last_commit >= self.every_s):
            self.commit(next_seq, failed)

    def due_in(self, next_seq: int) -> float:
        """Seconds until ``advance(next_seq, ...)`` would commit (0: now); inf when it never
        would (no checkpoint, or nothing new since the last commit): the driver may sleep that long."""
        if self.path is None or next_seq == self.committed_records:
            return float("inf")
        return max(0.0, self.every_s - (time.monotonic() - self._last_commit))

    def commit(self, next_seq: int, failed: int) -> None:
        """Make the first ``next_seq`` records durable: sink, then errors, then the manifest."""
        self.errors.release(next_seq)
        assert self.sink is not None
        self.sink.flush()
        self.errors.flush()
        self._last_commit = time.monotonic()
        self._write(next_seq, failed, finished=False)

    def finish(self, next_seq: int, failed: int) -> None:
        """The job is done: finish the output (Parquet: assemble the parts), mark it finished."""
        assert self.sink is not None
        self.errors.release(next_seq)
        if isinstance(self.sink, PartedParquetSink):
            self.commit(next_seq, failed)  # the parts are durable before they are assembled
            self.sink.finish()
        else:
            self.sink.close()
        self.errors.flush()
        self._write(next_seq, failed, finished=True)
        if isinstance(self.sink, PartedParquetSink):
            self.sink.cleanup()

    def _write(self, next_seq: int, failed: int, finished: bool) -> None:
        if self.path is None:
            return
        assert self.sink is not None
        sink_state = {"csv_header": list(self.sink._header)} if isinstance(self.sink, CsvSink) else {}
        write_manifest(self.path, {
            "version": VERSION, "job": self.job, "records_done": next_seq,
            "failed_records": self.resumed_failed + failed, "output_bytes": self.sink.bytes_written,
            "output_parts": getattr(self.sink, "parts", 0), "errors_bytes": self.errors.offset,
            "output_sha256": self.sink.final_digest() if finished else self.sink.digest.hexdigest(),
            "errors_sha256": self.errors.sink.digest.hexdigest(), "errors_file": os.path.abspath(self.errors.path),
            "sink": sink_state, "finished": finished, "numerics": self.numerics,
            "determinism": self.determinism_state() if self.determinism_state else self.determinism})
        self.committed_records = next_seq
