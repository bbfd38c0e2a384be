"""Opening the spool's files so that another local user cannot steer them.

The spool root may be shared with other users (the temp-dir fallback, a
Kubernetes volume); each pod directory in it is private to the user who
reports. Every file is opened relative to a descriptor of its pod directory,
checked once open (so the check and the use are on the same directory, with
no window for a swap), with ``O_NOFOLLOW``: a symlink planted in place of a
spool file, checkpoint, lock or log is refused, never followed.

The rules, checked on every open:

* the spool root belongs to this user (or root) and is not writable by
  others, unless it has the sticky bit (as ``/tmp`` has);
* a pod directory belongs to this user, with mode 0700 (:data:`PRIVATE_DIR_MODE`);
* a file is a regular file, reached without following a symlink.
"""
from __future__ import annotations

import errno
import os
import stat

__all__ = [
    "FILE_MODE", "PRIVATE_DIR_MODE", "UnsafePathError", "list_pod_dir", "open_at", "open_in_pod_dir",
    "open_pod_dir", "open_root",
]

PRIVATE_DIR_MODE = 0o700  # every directory the reporter creates
FILE_MODE = 0o600  # every file it creates

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class UnsafePathError(PermissionError):
    """A spool directory or file that another user could control; the message says what to do."""


def open_root(root: str, *, create: bool = False) -> int:
    """A descriptor of the spool root *root*, checked; created (mode 0700) first if *create* and missing.

    The root's own path may go through symlinks: it is the operator's choice,
    and the check is made on the directory actually opened.
    """
    if create:
        os.makedirs(root, mode=PRIVATE_DIR_MODE, exist_ok=True)
    fd = os.open(root, _DIR_FLAGS)
    try:
        info = os.fstat(fd)
        if info.st_uid not in (os.geteuid(), 0):
            raise UnsafePathError(f"the spool directory {root!r} belongs to uid {info.st_uid}, "
                                  f"not to this user (uid {os.geteuid()}) or root")
        if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
            raise UnsafePathError(f"the spool directory {root!r} (mode {stat.S_IMODE(info.st_mode):04o}) "
                                  "is writable by other users and has no sticky bit")
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_pod_dir(pod_dir: str, *, create: bool = False) -> int:
    """A descriptor of the private directory *pod_dir* (``<root>/<pod>``), checked; created if *create*."""
    root, name = os.path.split(pod_dir)
    root_fd = open_root(root, create=create)
    try:
        if create:
            try:
                os.mkdir(name, PRIVATE_DIR_MODE, dir_fd=root_fd)
            except FileExistsError:
                pass
        try:
            fd = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=root_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafePathError(f"{pod_dir!r} is not a directory (a symlink?): remove it") from None
            raise
    finally:
        os.close(root_fd)
    try:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid() or info.st_mode & 0o077:
            raise UnsafePathError(
                f"{pod_dir!r} (uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):04o}) is not a private "
                f"directory of this user (uid {os.geteuid()}, mode {PRIVATE_DIR_MODE:04o}); another user may "
                "have made it: check what it holds, then remove it"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_at(dir_fd: int, name: str, flags: int, mode: int = FILE_MODE, *, where: str = "") -> int:
    """Open the regular file *name* in the directory *dir_fd* without following a symlink.

    ``O_NONBLOCK`` keeps a FIFO planted under the name from blocking the open;
    it changes nothing for a regular file.
    """
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePathError(f"{os.path.join(where, name)!r} is a symlink; not following it: remove it") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePathError(f"{os.path.join(where, name)!r} is not a regular file: remove it")
    return fd


def open_in_pod_dir(path: str, flags: int, mode: int = FILE_MODE) -> int:
    """Open *path* (``<pod dir>/<name>``) with *flags*, safely: the one way to open a file in a pod directory.

    Raises :class:`UnsafePathError` (a ``PermissionError``) when the root, the
    pod directory or the file breaks the rules above, and ``OSError`` as
    ``os.open`` does otherwise.
    """
    pod_dir, name = os.path.split(path)
    dir_fd = open_pod_dir(pod_dir)
    try:
        return open_at(dir_fd, name, flags, mode, where=pod_dir)
    finally:
        os.close(dir_fd)


def list_pod_dir(pod_dir: str) -> list[str]:
    """The names in the private directory *pod_dir* (raises OSError, as :func:`open_pod_dir`)."""
    dir_fd = open_pod_dir(pod_dir)
    try:
        return os.listdir(dir_fd)
    finally:
        os.close(dir_fd)
