"""Guards on the output path, checked before anything is opened for writing.

``check_output_paths`` refuses (UsageError, exit 2) a job whose output, errors file or report
is the input file itself (compared by device and inode, so symbolic and hard links count),
whose output folder is missing or not writable, or whose output lies in a pseudo filesystem
(/proc, /sys, /dev). ``check_not_foreign`` refuses to overwrite a non-empty file that
parainfer did not write (the output or errors file without a checkpoint that lists it, a report
that is not a run report) unless ``--overwrite`` is given. ``OutputLock`` makes one output one
job: an exclusive ``flock`` on ``OUTPUT.parainfer-lock`` held for the whole job; a second job
on the same output is refused naming the first one's pid and host. The lock file is opened as
every file parainfer keeps next to the output is (``io.safe_files``): never through a link.
"""

from __future__ import annotations

import errno
import json
import os
import socket
from multiprocessing import util
from typing import Any

from parainfer.errors import UsageError
from parainfer.io.safe_files import open_no_follow

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


_OPTIONS = {"output": "--output", "errors file": "--errors", "report": "--report"}


def check_not_foreign(path: str, owned: bool, overwrite: bool, what: str = "output",
                      why: str = "no checkpoint next to it") -> None:
    """Refuse to overwrite a non-empty ``path`` that parainfer did not write.

    Args:
        path: the output, errors file or report ("-": stdout, never refused).
        owned: parainfer wrote it (the output's checkpoint lists it; a run report).
        overwrite: ``--overwrite`` was given: replace it anyway.
        what: "output", "errors file" or "report" (names the file and its option in the message).
        why: why it is not parainfer's, for the message.

    Raises:
        UsageError: the file exists, is not empty, is not ``owned``, and not ``overwrite``.
    """
    if path == "-" or overwrite or owned:
        return
    if os.path.isfile(path) and os.path.getsize(path) > 0:
        raise UsageError(f"{what} {path!r} already exists and was not written by parainfer ({why}); rerun with "
                         f"--overwrite to replace it, or choose another {_OPTIONS.get(what, '--' + what)}")


class OutputLock:
    """An exclusive lock on one output for the whole job: ``OUTPUT.parainfer-lock``.

    ``acquire()`` takes a non-blocking ``flock`` on the lock file and writes the holder's pid,
    host and command into it; ``release()`` deletes the file and drops the lock, also at the
    process's exit (a ``multiprocessing.util.Finalize``, which runs before the second Ctrl-C's
    immediate exit too). The lock goes with the process (a SIGKILLed job leaves a file that is
    not locked; the next job takes it). Also a context manager.

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
        self._finalizer: Any = None

    def acquire(self) -> OutputLock:
        """Take the lock (see the class doc); returns self. Raises UsageError when another job
        holds it, or when the lock path is a link or not a regular file (``io.safe_files``);
        OSError naming the lock file when it cannot be written (a full disk), after removing it."""
        import fcntl

        if self.path is None or self._fd is not None:
            return self
        while True:
            fd = open_no_follow(self.path, os.O_RDWR | os.O_CREAT, "lock file")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = _holder(fd, self.path)
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                raise UsageError(f"output {self.output!r} is in use by another parainfer job "
                                 f"({holder}); wait for it to finish or choose another "
                                 "--output") from None
            # The holder before us may have deleted the file after we opened it: lock the live one.
            if _same_inode(self.path, fd):
                break
            os.close(fd)
        self._fd = fd
        # An exit finalizer: it also runs on the second Ctrl-C's immediate exit (os._exit after
        # multiprocessing's finalizers: batch.recovery.GracefulStop), in this process only.
        self._finalizer = util.Finalize(self, self.release, exitpriority=0)
        info = {"pid": os.getpid(), "host": socket.gethostname()}
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(info).encode())
        except OSError as e:  # a full disk: no lock file left behind, and the message names it
            self.release()
            raise OSError(e.errno, e.strerror, self.path) from None
        return self

    def release(self) -> None:
        """Delete the lock file (if it is still the one locked) and drop the lock (safe to call twice)."""
        if self._fd is None:
            return
        if self._finalizer is not None:
            self._finalizer.cancel()
            self._finalizer = None
        if _same_inode(self.path, self._fd):  # type: ignore[arg-type]
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


def _same_inode(path: str, fd: int) -> bool:
    """True when ``path`` (not followed) is the file open as ``fd``."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)


def _holder(fd: int, path: str) -> str:
    """'pid 123 on host h, lock file ...' from the open lock file, or a generic phrase when it
    cannot be read yet."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {info['pid']} on host {info['host']}, lock file {path!r}"
    except (OSError, ValueError, KeyError, TypeError):
        return f"lock file {path!r}"
