"""Files parainfer creates next to the output, opened so that a planted link cannot redirect them.

The lock, the checkpoint, the errors file, the report, the parts folders and the part files are
parainfer's own: none of them may be a symbolic link or anything but a regular file (a folder
for the parts folders), whatever is at the other end, and a file written in place (the lock,
the errors file, a part) may not be a hard link either (a second name of another file).
``check_regular_or_absent`` and ``check_own_dir`` refuse such a path before anything is opened
(UsageError, exit 2, one line naming the path); ``open_no_follow`` opens with ``O_NOFOLLOW`` and
checks the opened file again (a link planted after the check); files written whole go through
``atomic_write`` (a temp file of a new random name in the same folder, then ``os.replace``,
which replaces a link rather than writing through it). The output named by ``-o`` is the
user's own choice and is not checked here (``io.guard``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from typing import IO

from parainfer.errors import UsageError

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _link_error(path: str, what: str) -> UsageError:
    try:
        target = f" (to {os.readlink(path)!r})"
    except OSError:
        target = ""
    return UsageError(f"{what} {path!r} is a symbolic link{target}; parainfer refuses to follow it: remove the "
                      "link and rerun")


def _check_stat(path: str, st: os.stat_result, what: str, one_name: bool) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise _link_error(path, what)
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{what} {path!r} is not a regular file ({_kind(st.st_mode)}); parainfer refuses to "
                         "use it: remove it and rerun")
    if one_name and st.st_nlink > 1:
        raise UsageError(f"{what} {path!r} has {st.st_nlink} hard links (parainfer never makes one: another name "
                         "shares its bytes); parainfer refuses to write it: remove it and rerun")


def check_regular_or_absent(path: str, what: str, one_name: bool = True) -> bool:
    """Refuse ``path`` unless it is absent or a regular file (with one name, when ``one_name``).

    Args:
        path: a file parainfer writes next to the output (lock, checkpoint, errors file, report, part).
        what: how the message names it ("lock file", "checkpoint", ...).
        one_name: refuse a hard link too: for a file parainfer writes in place (the lock, the
            errors file), where writing would change the other name's bytes. False for one it
            only reads, deletes or replaces by a rename (the checkpoint, the report, committed parts).

    Returns:
        True when the file exists, False when it does not.

    Raises:
        UsageError: ``path`` is a symbolic link (even one to a regular file, or a dangling one),
            not a regular file (a folder, a pipe, a device), or (``one_name``) has more than one
            hard link.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    _check_stat(path, st, what, one_name)
    return True


def open_no_follow(path: str, flags: int, what: str, mode: int = 0o644) -> int:
    """``os.open`` of a file parainfer owns, never through a link; returns the file descriptor.

    Args:
        path: the file. flags: ``os.O_*`` flags; ``O_NOFOLLOW`` is added. ``O_TRUNC`` is applied
            only after the opened file is checked (so a refused file is never cut).
        what: how a message names the file. mode: permissions of a created file.

    Raises:
        UsageError: the path is a symbolic link, not a regular file, or, opened for writing, has
            several hard links (checked before opening and again on the opened file).
        OSError: the open failed otherwise (``O_EXCL`` and the file exists, a missing folder,
            no permission); it names ``path``.
    """
    one_name = bool(flags & (os.O_WRONLY | os.O_RDWR))  # written in place: another name would change too
    check_regular_or_absent(path, what, one_name)
    try:
        # O_NONBLOCK: a named pipe put there after the check must not block the open.
        fd = os.open(path, (flags & ~os.O_TRUNC) | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _link_error(path, what) from None
        raise
    try:
        _check_stat(path, os.fstat(fd), what, one_name)
        os.set_blocking(fd, True)
        if flags & os.O_TRUNC:
            os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_file(path: str, mode: str, what: str) -> IO:
    """A file object over ``open_no_follow``: ``mode`` "rb", "wb" (create or cut), "xb" (create
    only), "r+b" (read and write, no create), or "w" / "x" / "r" for UTF-8 text. Raises as
    ``open_no_follow``."""
    flags = {"r": os.O_RDONLY, "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
             "x": os.O_WRONLY | os.O_CREAT | os.O_EXCL}[mode[0]]
    if "+" in mode:
        flags = os.O_RDWR
    fd = open_no_follow(path, flags, what)
    if "b" in mode:
        return os.fdopen(fd, mode.replace("x", "w"))
    return os.fdopen(fd, mode.replace("x", "w"), encoding="utf-8")


def check_own_dir(path: str, what: str) -> bool:
    """Refuse ``path`` unless it is absent or a real folder (not a symbolic link to one).
    Returns True when the folder exists. Raises UsageError naming the path otherwise."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode):
        raise _link_error(path, what)
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{what} {path!r} is not a folder ({_kind(st.st_mode)}); parainfer refuses to use it: "
                         "remove it and rerun")
    return True


def make_own_dir(path: str, what: str) -> None:
    """Create the folder ``path`` unless it exists; refuses as ``check_own_dir`` does."""
    if not check_own_dir(path, what):
        with contextlib.suppress(FileExistsError):
            os.mkdir(path)
        check_own_dir(path, what)


def foreign_names(folder: str, is_own: Callable[[str], bool], what: str) -> list[str]:
    """The names in ``folder`` that parainfer did not make (``is_own(name)`` False), sorted; an
    own name must be a regular file (UsageError as ``check_regular_or_absent`` otherwise; a
    hard link is let be: parts are read, deleted or made anew, never written in place).
    A missing folder has none."""
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    for name in names:
        if is_own(name):
            check_regular_or_absent(os.path.join(folder, name), what, one_name=False)
    return [name for name in names if not is_own(name)]


def remove_own(folder: str, is_own: Callable[[str], bool], keep: set[str] = frozenset(),  # type: ignore[assignment]
               rmdir: bool = False) -> None:
    """Delete the files in ``folder`` whose names are parainfer's (``is_own``) and not in
    ``keep``; with ``rmdir``, then the folder itself when nothing else is left in it. Files
    parainfer did not make are never deleted. A missing folder is nothing to do."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return
    for name in names:
        if is_own(name) and name not in keep:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(folder, name))
    if rmdir:
        with contextlib.suppress(OSError):  # not empty: files parainfer did not write stay
            os.rmdir(folder)


def fsync_dir(folder: str) -> None:
    """fsync a directory, so a file created or renamed in it survives a crash."""
    fd = os.open(folder or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(dest: str, text: bool = False) -> Iterator[IO]:
    """An open temp file in ``dest``'s folder, ``DEST.RANDOM.parainfer-tmp``, created with
    ``O_EXCL | O_NOFOLLOW`` as ``mkstemp`` does (a new name, never a planted one) but with the
    permissions of any new file (0o666 less the umask). On a clean exit it is flushed, fsynced
    and renamed over ``dest`` and the folder fsynced, so readers see the old file or the whole
    new one; a link at ``dest`` is replaced, never written through. On an error the temp file
    is removed; an OSError without a file name is raised again naming ``dest``. ``text``: a
    UTF-8 text file, else binary."""
    folder = os.path.dirname(dest) or "."
    while True:
        tmp = os.path.join(folder, f"{os.path.basename(dest)}.{secrets.token_hex(4)}.parainfer-tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "w" if text else "wb", **({"encoding": "utf-8"} if text else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        if isinstance(e, OSError) and not e.filename and e.errno is not None:
            raise OSError(e.errno, e.strerror, dest) from None
        raise
    fsync_dir(folder)
