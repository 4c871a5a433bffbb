"""Guards on the output path, checked before anything is opened for writing.

``check_output_paths`` refuses (UsageError, exit 2) a job whose output, errors file or report
is the input file itself (compared by device and inode, so symbolic and hard links count),
whose output folder is missing or not writable, or whose output lies in a pseudo filesystem
(/proc, /sys, /dev). ``check_not_foreign`` refuses to overwrite a non-empty file that
parainfer did not write (it has no checkpoint) unless ``--overwrite`` is given. ``OutputLock``
makes one output one job: an exclusive ``flock`` on ``OUTPUT.parainfer-lock`` held for the
whole job; a second job on the same output is refused naming the first one's pid and host.
"""

from __future__ import annotations

import errno
import json
import os
import socket
from typing import Any

from parainfer.errors import UsageError

LOCK_SUFFIX = ".parainfer-lock"
_PSEUDO_ROOTS = ("/proc", "/sys", "/dev")


def _same_file(a: str, b: str) -> bool:
    """True when both paths exist and name one file (same device and inode; links followed)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output_paths(input_path: str, outputs: dict[str, str | None]) -> None:
    """Refuse outputs that would destroy the input or cannot be written.

    Args:
        input_path: the input file, or "-" for stdin.
        outputs: what -> path ("output", "errors file", "report"); None or "-" are skipped.

    Raises:
        UsageError: an output is the input file (by inode, links included), is a directory,
            lies under /proc, /sys or /dev, or its folder is missing or not writable.
    """
    for what, path in outputs.items():
        if not path or path == "-":
            continue
        if input_path != "-" and _same_file(input_path, path):
            raise UsageError(f"{what} {path!r} is the input file {input_path!r} (same file on disk); writing it "
                             "would destroy the input: choose another path")
        real = os.path.realpath(path)
        if any(real == root or real.startswith(root + "/") for root in _PSEUDO_ROOTS):
            raise UsageError(f"{what} {path!r} is in the system folder {real.split('/')[1]!r} (resolved: "
                             f"{real!r}); choose a path on a real filesystem")
        if os.path.isdir(path):
            raise UsageError(f"{what} {path!r} is a directory; expected a file path")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise UsageError(f"{what} folder {folder!r} does not exist; create it or choose another path")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UsageError(f"{what} folder {folder!r} is not writable by this user; choose another path")
        if os.path.exists(path) and not os.access(path, os.W_OK):
            raise UsageError(f"{what} {path!r} exists and is not writable by this user; choose another path")


def check_not_foreign(output: str, has_checkpoint: bool, overwrite: bool) -> None:
    """Refuse to overwrite a non-empty ``output`` that has no parainfer checkpoint.

    Raises:
        UsageError: the file exists, is not empty, has no checkpoint, and not ``overwrite``.
    """
    if output == "-" or overwrite or has_checkpoint:
        return
    if os.path.isfile(output) and os.path.getsize(output) > 0:
        raise UsageError(f"output {output!r} already exists and was not written by parainfer (no checkpoint "
                         "next to it); rerun with --overwrite to replace it, or choose another --output")


class OutputLock:
    """An exclusive lock on one output for the whole job: ``OUTPUT.parainfer-lock``.

    ``acquire()`` takes a non-blocking ``flock`` on the lock file and writes the holder's pid,
    host and command into it; ``release()`` deletes the file and drops the lock. The lock
    goes with the process (a killed job leaves a file that is not locked; the next job takes
    it). Also a context manager.

    Args:
        output: the output path ("-" gives a lock that does nothing).

    Raises:
        UsageError: from ``acquire``, another live job holds the lock (the message names its
            pid and host, from the lock file).
    """

    def __init__(self, output: str):
        self.path = None if output == "-" else output + LOCK_SUFFIX
        self.output = output
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        import fcntl

        if self.path is None or self._fd is not None:
            return self
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                raise UsageError(f"output {self.output!r} is in use by another parainfer job "
                                 f"({_holder(self.path)}); wait for it to finish or choose another "
                                 "--output") from None
            # The holder before us may have deleted the file after we opened it: lock the live one.
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        self._fd = fd
        info = {"pid": os.getpid(), "host": socket.gethostname()}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
        return self

    def release(self) -> None:
        """Delete the lock file and drop the lock (safe to call twice)."""
        if self._fd is None:
            return
        try:
            os.remove(self.path)  # type: ignore[arg-type]
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _holder(path: str) -> str:
    """'pid 123 on host h' from a lock file, or a generic phrase when it cannot be read yet."""
    try:
        with open(path, encoding="utf-8") as f:
            info = json.loads(f.read() or "{}")
        return f"pid {info['pid']} on host {info['host']}, lock file {path!r}"
    except (OSError, ValueError, KeyError, TypeError):
        return f"lock file {path!r}"
