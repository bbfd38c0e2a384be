"""Opening the spool's files so that another local user cannot steer them.

The spool root may be shared with other users (the temp-dir fallback, a
Kubernetes volume); each pod directory in it is private to the user who
reports. Every file is opened relative to a descriptor of its pod directory,
checked once open (so the check and the use are on the same directory, with
no window for a swap), with ``O_NOFOLLOW``: a symlink planted in place of a
spool file, checkpoint, lock or log is refused, never followed.

The rules, checked on every open:

* every entry on the spool root's path (each directory and each symlink,
  walked from ``/``) that sits in a directory another user can write to, or
  owns, belongs to this user or root, and so does every symlink: another user
  can only create entries of their own, so none of theirs is ever followed
  (:func:`_walk`);
* the spool root belongs to this user (or root) and is not writable by
  others, unless it has the sticky bit (as ``/tmp`` has);
* a pod directory belongs to this user, with mode 0700 (:data:`PRIVATE_DIR_MODE`);
  only to read (``create=False``), root may also use one private to another user;
* a file is a regular file with one name (no hard link), reached without following a symlink.
"""

from __future__ import annotations

import errno
import os
import stat

__all__ = [
    "FILE_MODE",
    "PRIVATE_DIR_MODE",
    "UnsafePathError",
    "check_path",
    "list_pod_dir",
    "open_at",
    "open_in_pod_dir",
    "open_pod_dir",
    "open_root",
]

PRIVATE_DIR_MODE = 0o700  # every directory the reporter creates
FILE_MODE = 0o600  # every file it creates

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_MAX_SYMLINKS = 40  # as the kernel's limit on one path resolution (ELOOP)


class UnsafePathError(PermissionError):
    """A spool directory or file that another user could control; the message says what to do."""


def _shared(info: os.stat_result, uid: int) -> bool:
    """Whether another user can create or rename entries in the directory *info* (or owns it)."""
    return bool(info.st_mode & 0o022) or info.st_uid not in (uid, 0)


def _walk(path: str) -> os.stat_result:
    """The ``lstat`` of the directory *path* names, after checking every entry on the way there.

    Walked from ``/`` one component at a time, each symlink resolved and its
    target walked too: an entry in a directory that another user can write to
    (group or others, sticky or not) or owns, and any symlink, must belong to
    this user or root. An attacker can only create entries of their own, so
    their symlink or directory planted anywhere on the path is refused here,
    not followed. A few ``lstat`` calls per component: cheap enough for every open.
    """
    uid = os.geteuid()
    todo = [c for c in reversed(path.split("/")) if c and c != "."]  # components still to walk, last first
    current, info = "/", os.lstat("/")
    links = 0
    while todo:
        name = todo.pop()
        if name == "..":
            current = os.path.dirname(current)  # *current* is always a real path: no symlink in it
            info = os.lstat(current)
            continue
        entry = os.path.join(current, name)
        entry_info = os.lstat(entry)
        is_link = stat.S_ISLNK(entry_info.st_mode)
        if (is_link or _shared(info, uid)) and entry_info.st_uid not in (uid, 0):
            where = "" if entry == path else f", on the path of the spool directory {path!r},"
            raise UnsafePathError(
                f"{entry!r}{where} is a {'symlink' if is_link else 'directory'} of uid {entry_info.st_uid} "
                f"(not this user, uid {uid}, nor root) in a directory that other users can write to or own"
            )
        if not is_link:
            current, info = entry, entry_info
            continue
        links += 1
        if links > _MAX_SYMLINKS:
            raise OSError(errno.ELOOP, f"too many symlinks on the path of the spool directory {path!r}")
        target = os.readlink(entry)
        if target.startswith("/"):
            current, info = "/", os.lstat("/")
        todo.extend(c for c in reversed(target.split("/")) if c and c != ".")
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
    return info


def check_path(path: str) -> None:
    """Check the part of the absolute *path* that exists, as :func:`open_root` checks a whole spool root's path.

    Raises :class:`UnsafePathError` when another user controls an entry on it;
    nothing when the rest could be created safely.
    """
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    _walk(path)


def open_root(root: str, *, create: bool = False) -> int:
    """A descriptor of the spool root *root*, checked; created (mode 0700) first if *create* and missing.

    The root's path may go through symlinks, but only through ones that no
    other user could have planted or can change (see :func:`_walk`); the
    directory opened must be the one walked, so a swap in between is refused too.
    """
    # Not abspath: '..' after a symlink is the kernel's, not text. No getcwd() for an absolute
    # root: the job's working directory may have been removed.
    path = root if os.path.isabs(root) else os.path.join(os.getcwd(), root)
    if create and not os.path.isdir(path):
        check_path(path)  # before creating anything: never a directory where another user's symlink points
        os.makedirs(path, mode=PRIVATE_DIR_MODE, exist_ok=True)
    walked = _walk(path)
    fd = os.open(root, _DIR_FLAGS)
    try:
        info = os.fstat(fd)
        if (info.st_dev, info.st_ino) != (walked.st_dev, walked.st_ino):
            raise UnsafePathError(
                f"the spool directory {root!r} changed while it was being checked: "
                "another user may be swapping it; check who can write to its parent"
            )
        if info.st_uid not in (os.geteuid(), 0):
            raise UnsafePathError(
                f"the spool directory {root!r} belongs to uid {info.st_uid}, "
                f"not to this user (uid {os.geteuid()}) or root"
            )
        if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
            raise UnsafePathError(
                f"the spool directory {root!r} (mode {stat.S_IMODE(info.st_mode):04o}) "
                "is writable by other users and has no sticky bit"
            )
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
        # Root only reading (status, history, recover) may use another user's pod directory while it is
        # private to that user; a writer (create=True) never does. Files are still opened without following
        # a symlink or a hard link (see open_at), so that user cannot point root's writes elsewhere.
        owner_ok = info.st_uid == os.geteuid() or (not create and os.geteuid() == 0)
        if not owner_ok or info.st_mode & 0o077:
            # Ours with a wider mode (the kubelet's fsGroup chmod after a restart, say) holds our pending
            # reports: removing it would lose them.
            fix = (
                f"if nobody else put anything in it, `chmod -R go= {pod_dir}`"
                if info.st_uid == os.geteuid()
                else "another user may have made it: check what it holds, then remove it"
            )
            raise UnsafePathError(
                f"{pod_dir!r} (uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):04o}) is not a private "
                f"directory of this user (uid {os.geteuid()}, mode {PRIVATE_DIR_MODE:04o}); {fix}"
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
    info = os.fstat(fd)
    if info.st_nlink == 0:  # replaced (a checkpoint's rename) or removed since the open: as if not there
        os.close(fd)
        raise FileNotFoundError(errno.ENOENT, "removed while being opened", os.path.join(where, name))
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        # A hard link could make a file elsewhere (not the owner's to give) look like one of ours.
        what = "a regular file" if not stat.S_ISREG(info.st_mode) else f"a file with one name ({info.st_nlink} links)"
        raise UnsafePathError(f"{os.path.join(where, name)!r} is not {what}: remove it")
    if flags & os.O_CREAT and os.geteuid() == 0:
        # Root recovering a user's pod: what it creates there (a lock, a checkpoint) belongs to
        # the pod's owner, whose own uploader must be able to open it later.
        owner = os.fstat(dir_fd)
        if owner.st_uid != info.st_uid:
            os.fchown(fd, owner.st_uid, owner.st_gid)
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
